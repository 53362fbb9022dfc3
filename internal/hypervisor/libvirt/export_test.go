package libvirt

// HandshakeFailed exposes handshakeFailed to the package's external tests.
var HandshakeFailed = handshakeFailed
