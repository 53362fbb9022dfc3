// Package storetest starts a real single-member embedded etcd for tests of
// packages that use the store, with certificates from a fresh cluster CA,
// on free 127.0.0.1 ports, removed when the test ends.
package storetest

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/pki"
	"github.com/haven-ha/haven/internal/store"
)

// Server is a running test store.
type Server struct {
	// Store is connected and owns the embedded member.
	Store     *store.Store
	Endpoints []string
	TLS       *tls.Config
	// CA issued the store's certificate; Cert and Key (PEM) are the
	// identity of every Store this server hands out (node "test").
	CA        *pki.CA
	Cert, Key []byte
}

// Start starts an embedded etcd and returns it connected. The cluster
// config is not written; call Store.InitCluster if the test needs it.
func Start(t testing.TB) *Server {
	t.Helper()
	dir := t.TempDir()
	now := time.Now()
	ca, err := pki.NewCA("test", now)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.IssueNode("test", []string{"127.0.0.1", "localhost"}, now)
	if err != nil {
		t.Fatal(err)
	}
	caF, certF, keyF := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "node.crt"), filepath.Join(dir, "node.key")
	for f, b := range map[string][]byte{caF: ca.CertPEM, certF: cert, keyF: key} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	peer, client := "https://"+FreeAddr(t), "https://"+FreeAddr(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := store.StartEmbedded(ctx, store.EmbeddedConfig{
		Name: "test", Dir: filepath.Join(dir, "etcd"), PeerURL: peer, ClientURL: client,
		CAFile: caF, CertFile: certF, KeyFile: keyF,
	})
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := pki.ClientTLS(ca.CertPEM, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Endpoints: []string{client}, TLS: tlsCfg, CA: ca, Cert: cert, Key: key}
	s.Store, err = store.Connect(ctx, store.ClientConfig{Endpoints: s.Endpoints, TLS: tlsCfg}, e, nil)
	if err != nil {
		e.Close()
		t.Fatal(err)
	}
	s.Store.SetIdentity("test", cert, key)
	t.Cleanup(func() { s.Store.Close() })
	return s
}

// Connect opens another, independent client of the test store (another
// "host"), closed when the test ends.
func (s *Server) Connect(t testing.TB) *store.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := store.Connect(ctx, store.ClientConfig{Endpoints: s.Endpoints, TLS: s.TLS}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	st.SetIdentity("test", s.Cert, s.Key)
	t.Cleanup(func() { st.Close() })
	return st
}

// FreeAddr is a free 127.0.0.1 address (host:port) for a test server.
func FreeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
