package client

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// deadURL is an https URL on loopback where nothing listens.
func deadURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "https://" + ln.Addr().String()
	ln.Close()
	return u
}

// hungURL accepts connections and never answers (a frozen agent).
func hungURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	return "https://" + ln.Addr().String()
}

func agentServer(t *testing.T, peers string) *httptest.Server {
	t.Helper()
	s := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if peers != "" {
			w.Header().Set(PeersHeader, peers)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"cluster":"c","node":"live"}`))
	}))
	t.Cleanup(s.Close)
	return s
}

// TestFailsOverToLiveAgent: a dead and a frozen agent are skipped quickly
// and the call reaches the live one, which is tried first afterwards.
func TestFailsOverToLiveAgent(t *testing.T) {
	live := agentServer(t, "")
	c := New(deadURL(t)+","+hungURL(t)+","+live.URL, "tok", live.Client().Transport.(*http.Transport).TLSClientConfig)
	defer c.Close()
	start := time.Now()
	st, err := c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 8*time.Second {
		t.Errorf("took %v to get past a dead and a frozen agent", took)
	}
	if st.Node != "live" || c.Base() != live.URL {
		t.Errorf("answered by %q, base now %s; want live, %s", st.Node, c.Base(), live.URL)
	}
}

// TestNoAgentAnswers: the error names every agent tried, quickly.
func TestNoAgentAnswers(t *testing.T) {
	a, b := deadURL(t), deadURL(t)
	c := New(a+","+b, "tok", nil)
	start := time.Now()
	_, err := c.Status(context.Background())
	var u *Unreachable
	if !errors.As(err, &u) || !strings.Contains(err.Error(), a) || !strings.Contains(err.Error(), b) || !strings.Contains(err.Error(), "--server") {
		t.Fatalf("err %v; want Unreachable naming %s and %s", err, a, b)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("took %v", took)
	}
}

// TestLearnsPeersAndRemembers: the hosts an answer names are cached; a
// later client that knows only a host now dead reaches another through
// the cache.
func TestLearnsPeersAndRemembers(t *testing.T) {
	cache := t.TempDir()
	first := agentServer(t, "")
	other := agentServer(t, "")
	firstPeers := agentServer(t, first.URL+","+other.URL)
	tlsCfg := first.Client().Transport.(*http.Transport).TLSClientConfig
	// All three test servers share httptest's certificate.
	c := New(firstPeers.URL, "tok", tlsCfg)
	c.SetCacheDir(cache)
	if _, err := c.Status(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := c.Servers(); len(got) != 3 {
		t.Fatalf("servers after one answer: %v", got)
	}
	c.Close()
	firstPeers.Close()
	first.Close()
	c2 := New(firstPeers.URL, "tok", tlsCfg)
	c2.SetCacheDir(cache)
	defer c2.Close()
	if _, err := c2.Status(context.Background()); err != nil {
		t.Fatalf("with the cache: %v", err)
	}
	if c2.Base() != other.URL {
		t.Errorf("answered by %s; want %s", c2.Base(), other.URL)
	}
	c3 := New(firstPeers.URL, "tok", tlsCfg)
	defer c3.Close()
	if _, err := c3.Status(context.Background()); err == nil {
		t.Error("without the cache a dead host answered")
	}
}

// TestDeadAgentTriedLast: an agent that did not answer is tried last by
// the next client (the next CLI run) for a while, through the cache dir.
func TestDeadAgentTriedLast(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var mu sync.Mutex
	conns := 0
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns++
			mu.Unlock()
			defer c.Close()
		}
	}()
	hung := "https://" + ln.Addr().String()
	live := agentServer(t, "")
	tlsCfg := live.Client().Transport.(*http.Transport).TLSClientConfig
	cache := t.TempDir()
	for i := range 2 {
		c := New(hung+","+live.URL, "tok", tlsCfg)
		c.SetCacheDir(cache)
		if _, err := c.Status(context.Background()); err != nil {
			t.Fatal(err)
		}
		c.Close()
		mu.Lock()
		n := conns
		mu.Unlock()
		if n != 1 {
			t.Fatalf("after run %d the hung agent got %d connections; want 1 (tried once, then last)", i+1, n)
		}
	}
}

// TestDeadFirstHostAnswersFast: with the first host frozen (it accepts
// connections and never answers, as a host that just died may) or gone,
// a GET such as status is answered by the next host within about a
// second, not after the connect or TLS handshake timeouts.
func TestDeadFirstHostAnswersFast(t *testing.T) {
	for _, first := range []struct{ name, url string }{{"frozen", hungURL(t)}, {"gone", deadURL(t)}} {
		t.Run(first.name, func(t *testing.T) {
			live := agentServer(t, "")
			c := New(first.url+","+live.URL, "tok", live.Client().Transport.(*http.Transport).TLSClientConfig)
			defer c.Close()
			start := time.Now()
			st, err := c.Status(context.Background())
			took := time.Since(start)
			if err != nil || st.Node != "live" {
				t.Fatalf("status: %+v %v", st, err)
			}
			if took > time.Second {
				t.Fatalf("status took %v with a %s first host; want under 1 s", took, first.name)
			}
			t.Logf("status answered in %v with a %s first host", took, first.name)
		})
	}
}

// TestSlowHostNotMarkedDown: a host that accepted the connection but
// answers slowly loses the race to the next one, and is not taken for
// dead (it stays first in the order).
func TestSlowHostNotMarkedDown(t *testing.T) {
	release := make(chan struct{})
	slow := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
		w.Write([]byte(`{"node":"slow"}`))
	}))
	t.Cleanup(slow.Close)
	t.Cleanup(func() { close(release) })
	live := agentServer(t, "")
	c := New(slow.URL+","+live.URL, "tok", slow.Client().Transport.(*http.Transport).TLSClientConfig)
	defer c.Close()
	st, err := c.Status(context.Background())
	if err != nil || st.Node != "live" {
		t.Fatalf("status: %+v %v", st, err)
	}
	c.mu.Lock()
	_, down := c.down[slow.URL]
	c.mu.Unlock()
	if down {
		t.Fatal("a connected but slow host was marked down")
	}
}
