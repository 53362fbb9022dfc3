package api_test

import (
	"context"
	"math/bits"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/api/client"
	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/pki"
)

// browserFrom is newBrowser whose connections come from local address ip
// (another loopback address: another client as far as the agent knows).
func browserFrom(t *testing.T, ag interface{ URL() string }, caFile, ip string) *browser {
	t.Helper()
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := pki.ClientTLS(caPEM, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	hc := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg, DialContext: d.DialContext}}
	t.Cleanup(hc.CloseIdleConnections)
	return &browser{t: t, base: ag.URL(), hc: hc}
}

// Issue 10, High 2: a user name that user creation would refuse (1 MB of
// it) is refused before it reaches the throttle's table or the log.
func TestLoginHugeUserNameRefusedEarly(t *testing.T) {
	ag := startAgent(t)
	b := newBrowser(t, ag)
	huge := strings.Repeat("x", 1<<20-100)
	for i := range 3 {
		a := b.do("POST", "/api/v1/login", `{"user":"`+huge[i:]+`","password":"p"}`, map[string]string{"Content-Type": "application/json"})
		if a.code != http.StatusUnauthorized {
			t.Fatalf("login with a 1 MB user name: %d %.200s", a.code, a.body)
		}
		if len(a.body) > 4096 {
			t.Fatalf("the answer echoes the name: %d bytes", len(a.body))
		}
	}
}

// Issue 10, Low: the throttle checks and counts in one step, so parallel
// guesses get no more tries than sequential ones; and a guesser at one
// address does not lock the real user out at another.
func TestLoginThrottleAtomicAndPerAddress(t *testing.T) {
	ag := startAgent(t)
	addUser(t, ag, "olga", api.RoleOperator, "correct horse")
	attacker := browserFrom(t, ag, ag.CAFile, "127.0.0.1")
	var mu sync.Mutex
	tries := 0
	var wg sync.WaitGroup
	start := time.Now()
	for range 100 {
		wg.Go(func() {
			a := attacker.do("POST", "/api/v1/login", api.LoginRequest{User: "olga", Password: "guess"}, nil)
			if a.code != http.StatusTooManyRequests {
				mu.Lock()
				tries++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	// 5 free tries, then one after 1 s, 2 s, 4 s... of waiting: a slow
	// machine may see a few of those.
	elapsed := time.Since(start)
	if want := 5 + bits.Len(uint(elapsed.Seconds())); tries > want {
		t.Errorf("100 parallel guesses in %s got %d password checks, want at most %d", elapsed.Round(time.Millisecond), tries, want)
	}
	real := browserFrom(t, ag, ag.CAFile, "127.0.0.2")
	if a, _ := real.login(api.LoginRequest{User: "olga", Password: "correct horse"}); a.code != http.StatusOK {
		t.Errorf("the real user at another address was locked out: %d %s", a.code, a.body)
	}
}

// Issue 10, Medium 5: a password change ends the user's sessions, and a
// user deleted and made again does not inherit the old one's sessions.
func TestSessionsEndWithPasswordChangeAndUserDeletion(t *testing.T) {
	ag := startAgent(t)
	addUser(t, ag, "olga", api.RoleViewer, "correct horse")
	b := newBrowser(t, ag)
	if a, _ := b.login(api.LoginRequest{User: "olga", Password: "correct horse"}); a.code != http.StatusOK {
		t.Fatalf("login: %d %s", a.code, a.body)
	}
	if a := b.do("GET", "/api/v1/whoami", nil, nil); a.code != http.StatusOK {
		t.Fatalf("whoami: %d", a.code)
	}
	ctx := context.Background()
	if err := ag.Clients["admin"].Do(ctx, "PUT", "/api/v1/users/olga", api.UserRequest{Password: "battery staple"}, nil); err != nil {
		t.Fatal(err)
	}
	if a := b.do("GET", "/api/v1/guests", nil, nil); a.code != http.StatusUnauthorized {
		t.Errorf("old session after a password change: %d, want 401", a.code)
	}
	if a, _ := b.login(api.LoginRequest{User: "olga", Password: "battery staple"}); a.code != http.StatusOK {
		t.Fatalf("login: %d %s", a.code, a.body)
	}
	if err := ag.Clients["admin"].Do(ctx, "DELETE", "/api/v1/users/olga", nil, nil); err != nil {
		t.Fatal(err)
	}
	addUser(t, ag, "olga", api.RoleAdmin, "another password")
	if a := b.do("GET", "/api/v1/users", nil, nil); a.code != http.StatusUnauthorized {
		t.Errorf("old viewer session of a deleted user, after an admin of the same name was made: %d, want 401", a.code)
	}
}

// Issue 10, Medium 6: revoking a token closes the event streams opened
// with it.
func TestEventStreamClosesOnRevoke(t *testing.T) {
	ctx := ctxT(t)
	tok, err := ag.Clients["admin"].CreateToken(ctx, api.TokenRequest{Role: "viewer", Name: "streamer"})
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := os.ReadFile(ag.CAFile)
	tlsCfg, _ := pki.ClientTLS(caPEM, nil, nil)
	c := client.New(ag.URL(), tok.Token, tlsCfg)
	defer c.Close()
	opened := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		done <- c.StreamEvents(ctx, client.EventFilter{N: 1}, func(cluster.Event) error {
			select {
			case opened <- struct{}{}:
			default:
			}
			return nil
		})
	}()
	// An event so that the stream is known to be open.
	if _, err := ag.Clients["operator"].CreateGuest(ctx, map[string]any{"name": "streamed1", "state": "stopped", "boot": kboot}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-opened:
	case err := <-done:
		t.Fatalf("stream ended early: %v", err)
	case <-ctx.Done():
		t.Fatal("no event on the stream")
	}
	if err := ag.Clients["admin"].RevokeToken(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	revoked := time.Now()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "closed by the agent") {
			t.Errorf("stream ended with %v, want the agent to say it closed it", err)
		}
		t.Logf("stream closed %s after the revocation", time.Since(revoked).Round(time.Millisecond))
	case <-time.After(api.StreamRecheck + 5*time.Second):
		t.Fatal("the event stream of a revoked token stays open")
	}
}
