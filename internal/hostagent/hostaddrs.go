package hostagent

import (
	"context"
	"net"
	"net/netip"
	"net/url"
	"sync"
	"time"

	"github.com/haven-ha/haven/internal/health"
	"github.com/haven-ha/haven/internal/store"
)

// hostAddrs are the addresses of the cluster's hosts that guests' health
// checks never connect to (health.Config.HostAddrs): this host's
// interfaces, every registered host's API, peer and store addresses, and
// the store's endpoints. The registrations are read at most every 30 s.
type hostAddrs struct {
	st  *store.Store
	now func() time.Time

	mu    sync.Mutex
	at    time.Time    // guarded by mu
	known []netip.Addr // the registered hosts' and the store's; guarded by mu
}

func (h *hostAddrs) get(ctx context.Context) []netip.Addr {
	out := health.LocalAddrs()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.known == nil || h.now().Sub(h.at) > 30*time.Second {
		if nodes, err := h.st.Nodes(ctx); err == nil {
			var known []netip.Addr
			for _, n := range nodes {
				for _, a := range []string{n.APIAddr, n.PeerAddr, n.ClientAddr} {
					known = appendHost(ctx, known, a)
				}
			}
			for _, ep := range h.st.Client().Endpoints() {
				known = appendHost(ctx, known, ep)
			}
			h.known, h.at = known, h.now()
		}
	}
	return append(out, h.known...)
}

// appendHost adds the IP addresses that addr (HOST:PORT or a URL) names or
// its host name resolves to.
func appendHost(ctx context.Context, to []netip.Addr, addr string) []netip.Addr {
	if u, err := url.Parse(addr); err == nil && u.Host != "" {
		addr = u.Host
	}
	if host, _, err := net.SplitHostPort(addr); err == nil {
		addr = host
	}
	if addr == "" {
		return to
	}
	if ip, err := netip.ParseAddr(addr); err == nil {
		return append(to, ip.Unmap())
	}
	ips, _ := net.DefaultResolver.LookupNetIP(ctx, "ip", addr)
	for _, ip := range ips {
		to = append(to, ip.Unmap())
	}
	return to
}
