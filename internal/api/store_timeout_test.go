package api_test

import (
	"bytes"
	"context"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/cli"
	"github.com/haven-ha/haven/internal/pki"
	"github.com/haven-ha/haven/internal/store"
)

// freezer is a TCP proxy to the store that can stop passing bytes: the
// agent behind it still answers HTTP, but its store reads hang, as when
// its store member freezes or the network to the store drops packets.
type freezer struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	frozen bool
	conns  []net.Conn
}

func newFreezer(t *testing.T, target string) *freezer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); f.freeze() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.mu.Lock()
			f.conns = append(f.conns, c)
			frozen := f.frozen
			f.mu.Unlock()
			if frozen {
				continue // accepted, never answered
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			f.mu.Lock()
			f.conns = append(f.conns, up)
			f.mu.Unlock()
			go io.Copy(up, c)
			go io.Copy(c, up)
		}
	}()
	return f
}

// freeze drops the connections that pass bytes; new ones are accepted
// and left silent.
func (f *freezer) freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.frozen = true
	for _, c := range f.conns {
		c.Close()
	}
	f.conns = nil
}

// Issue 16: an agent whose store reads hang answers a read within the
// store timeout with a 503 that says the store does not answer, and the
// CLI prints it, instead of hanging past the CLI's own timeouts.
func TestStoreUnreachableIs503(t *testing.T) {
	ctx := ctxT(t)
	caF, certF, keyF := ag.A.TLSFiles()
	var pems [3][]byte
	for i, f := range []string{caF, certF, keyF} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		pems[i] = b
	}
	tlsCfg, err := pki.ClientTLS(pems[0], pems[1], pems[2])
	if err != nil {
		t.Fatal(err)
	}
	eps := ag.A.Store().Client().Endpoints()
	fr := newFreezer(t, strings.TrimPrefix(eps[0], "https://"))
	st, err := store.Connect(ctx, store.ClientConfig{Endpoints: []string{"https://" + fr.ln.Addr().String()}, TLS: tlsCfg}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	const timeout = 700 * time.Millisecond
	srv := api.New(api.Config{Store: st, Node: "n1", StoreTimeout: timeout})
	api.RegisterOps(srv, api.OpsConfig{})
	hs := httptest.NewTLSServer(srv.Handler())
	t.Cleanup(hs.Close)
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: hs.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	get := func() (int, string, time.Duration) {
		start := time.Now()
		req, _ := http.NewRequestWithContext(ctx, "GET", hs.URL+"/api/v1/guests", nil)
		req.Header.Set("Authorization", "Bearer "+ag.Tokens["viewer"])
		resp, err := hs.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), time.Since(start)
	}
	if code, body, _ := get(); code != http.StatusOK {
		t.Fatalf("before the freeze: %d %s", code, body)
	}
	fr.freeze()
	code, body, took := get()
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "the cluster store does not answer") {
		t.Fatalf("with the store frozen: %d %s, want 503 saying the store does not answer", code, body)
	}
	// Authentication (its quorum read, then the local member) and the
	// handler share one deadline.
	if took > timeout+2*time.Second {
		t.Fatalf("the 503 took %v, want about %v", took, timeout)
	}

	var out, errb bytes.Buffer
	env := &cli.Env{Stdout: &out, Stderr: &errb, Stdin: strings.NewReader(""), Getenv: func(k string) string {
		switch k {
		case "HAVEN_SERVER":
			return hs.URL
		case "HAVEN_TOKEN":
			return ag.Tokens["viewer"]
		case "HAVEN_CACERT":
			return caFile
		case "HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME":
			return t.TempDir()
		}
		return ""
	}}
	start := time.Now()
	rc := cli.Run(context.Background(), env, []string{"guest", "list"})
	if rc == 0 || !strings.Contains(errb.String(), "the cluster store does not answer") || time.Since(start) > timeout+3*time.Second {
		t.Fatalf("haven guest list: exit %d after %v, stdout %q, stderr %q; want a failure saying the store does not answer, at once",
			rc, time.Since(start), out.String(), errb.String())
	}
	t.Logf("haven guest list with the store frozen (%v): %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(errb.String()))
}
