package store

import (
	"context"
	"net"
	"net/url"
	"strings"
	"sync"
)

// conns dials the client's connections to the store members and keeps
// them by address, so that the connections to a member can be cut
// (Sever). Pointing the client elsewhere (SetEndpoints) is not enough for
// a member whose host froze or lost power: gRPC drains a removed
// address's connection gracefully, so the streams already on it (lease
// keepalives, watches: the election's, the orders') stay there, waiting,
// until gRPC's keepalive gives the connection up (10 s at the least).
// Closed, the connection fails those streams at once, and etcd's client
// opens them again on another member: a watch resumes from its last
// revision, the lease keepalive stream is opened again.
type conns struct {
	mu     sync.Mutex
	byAddr map[string]map[*trackedConn]struct{}
}

type trackedConn struct {
	net.Conn
	addr string
	set  *conns
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { c.set.forget(c) })
	return c.Conn.Close()
}

func (s *conns) dial(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	network, where := "tcp", addr
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		network, where = "unix", strings.TrimPrefix(path, "//")
	}
	nc, err := d.DialContext(ctx, network, where)
	if err != nil {
		return nil, err
	}
	c := &trackedConn{Conn: nc, addr: addr, set: s}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byAddr == nil {
		s.byAddr = map[string]map[*trackedConn]struct{}{}
	}
	if s.byAddr[addr] == nil {
		s.byAddr[addr] = map[*trackedConn]struct{}{}
	}
	s.byAddr[addr][c] = struct{}{}
	return c, nil
}

func (s *conns) forget(c *trackedConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.byAddr[c.addr], c)
	if len(s.byAddr[c.addr]) == 0 {
		delete(s.byAddr, c.addr)
	}
}

// sever closes every connection to the given endpoints (URLs or
// host:port) and returns how many it closed.
func (s *conns) sever(endpoints []string) int {
	var cut []*trackedConn
	s.mu.Lock()
	for _, ep := range endpoints {
		for c := range s.byAddr[endpointAddr(ep)] {
			cut = append(cut, c)
		}
	}
	s.mu.Unlock()
	for _, c := range cut {
		_ = c.Close()
	}
	return len(cut)
}

// endpointAddr is the address etcd's resolver gives gRPC to dial for an
// endpoint: host:port for an http(s) URL, unix:PATH for a socket.
func endpointAddr(ep string) string {
	for _, scheme := range []string{"unixs://", "unix://", "unixs:", "unix:"} {
		if path, ok := strings.CutPrefix(ep, scheme); ok {
			if strings.HasPrefix(path, "/") && strings.HasSuffix(scheme, "//") {
				return "unix://" + path
			}
			return "unix:" + path
		}
	}
	if u, err := url.Parse(ep); err == nil && u.Host != "" && (u.Scheme == "http" || u.Scheme == "https") {
		return u.Host
	}
	return ep
}
