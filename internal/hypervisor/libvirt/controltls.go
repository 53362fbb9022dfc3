package libvirt

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// libvirtd's own connection between hosts: with peer-to-peer migration the
// source libvirtd connects to the target's with the target's migration URI.
// Haven lays the cluster's certificates out for libvirt's TLS transport
// (WritePKI) and, when the host's libvirtd.conf serves TLS with them, the
// host's migration URI is qemu+tls (TLSURI); otherwise qemu+tcp.

// DefaultPKIDir is where the agent keeps libvirt's TLS transport
// certificates unless told otherwise.
const DefaultPKIDir = "/etc/libvirt/haven-pki"

// Defaults of libvirtd.conf's TLS settings.
const (
	defaultTLSPort  = "16514"
	defaultCAFile   = "/etc/pki/CA/cacert.pem"
	defaultCertFile = "/etc/pki/libvirt/servercert.pem"
	defaultKeyFile  = "/etc/pki/libvirt/private/serverkey.pem"
)

// LibvirtdConf is what Haven reads of libvirtd.conf: whether and where it
// serves TLS, and with which credentials.
type LibvirtdConf struct {
	ListenTLS                 bool // listen_tls (default on; libvirtd started with --listen)
	TLSPort                   string
	CAFile, CertFile, KeyFile string
}

// ReadLibvirtdConf reads libvirtd.conf at path.
func ReadLibvirtdConf(path string) (LibvirtdConf, error) {
	vals, err := readConf(path, "libvirtd.conf")
	if err != nil {
		return LibvirtdConf{}, err
	}
	or := func(k, def string) string {
		if v := vals[k]; v != "" {
			return v
		}
		return def
	}
	return LibvirtdConf{
		ListenTLS: or("listen_tls", "1") != "0",
		TLSPort:   or("tls_port", defaultTLSPort),
		CAFile:    filepath.Clean(or("ca_file", defaultCAFile)),
		CertFile:  filepath.Clean(or("cert_file", defaultCertFile)),
		KeyFile:   filepath.Clean(or("key_file", defaultKeyFile)),
	}, nil
}

// PKI file names in a pkipath directory (libvirt's client reads cacert.pem,
// clientcert.pem and clientkey.pem there; libvirtd.conf names the server's).
const (
	pkiCA         = "cacert.pem"
	pkiClientCert = "clientcert.pem"
	pkiClientKey  = "clientkey.pem"
	pkiServerCert = "servercert.pem"
	pkiServerKey  = "serverkey.pem"
)

// UsesPKI reports whether libvirtd serves TLS with the certificates
// WritePKI lays out in dir.
func (c LibvirtdConf) UsesPKI(dir string) bool {
	dir = filepath.Clean(dir)
	return c.ListenTLS && c.CAFile == filepath.Join(dir, pkiCA) &&
		c.CertFile == filepath.Join(dir, pkiServerCert) && c.KeyFile == filepath.Join(dir, pkiServerKey)
}

// WritePKI lays out the cluster's trust bundle and this host's
// certificate and key (ca, cert and key are files) in dir, root's only, for
// libvirt's TLS transport: as client (the URI's pkipath) and as server
// (libvirtd.conf's ca_file, cert_file, key_file). The host's certificate
// is valid for both. Each file is replaced atomically.
func WritePKI(dir, ca, cert, key string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("libvirt TLS certificates: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("libvirt TLS certificates: %w", err)
	}
	for name, src := range map[string]string{pkiCA: ca, pkiClientCert: cert, pkiClientKey: key, pkiServerCert: cert, pkiServerKey: key} {
		b, err := os.ReadFile(src)
		if err != nil {
			return fmt.Errorf("libvirt TLS certificates: %w", err)
		}
		tmp := filepath.Join(dir, name+".tmp")
		if err := os.WriteFile(tmp, b, 0o600); err != nil {
			return fmt.Errorf("libvirt TLS certificates: %w", err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("libvirt TLS certificates: %w", err)
		}
	}
	return nil
}

// TLSURI is the qemu+tls URI of the libvirtd at host, listening on port,
// that a peer's libvirtd reaches with the client certificates of dir.
func TLSURI(host, port, dir string) string {
	dir = filepath.Clean(dir)
	q := "pkipath=" + dir
	if strings.ContainsFunc(dir, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-", r))
	}) {
		q = "pkipath=" + url.QueryEscape(dir)
	}
	u := url.URL{Scheme: "qemu+tls", Host: host, Path: "/system", RawQuery: q}
	if port != "" && port != defaultTLSPort {
		u.Host = net.JoinHostPort(host, port)
	} else if ip := net.ParseIP(host); ip != nil && ip.To4() == nil {
		u.Host = "[" + host + "]"
	}
	return u.String()
}
