package cli

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/haven-ha/haven/internal/notify"
)

// TestNotifyCLI: an admin sets a webhook (a receiver on loopback), sees
// it, and a test notification reaches it; a broken one is reported.
func TestNotifyCLI(t *testing.T) {
	ag, ctx := startAgent(t)
	var mu sync.Mutex
	var got []notify.Notification
	var auth string
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var n notify.Notification
		json.NewDecoder(r.Body).Decode(&n)
		mu.Lock()
		got, auth = append(got, n), r.Header.Get("Authorization")
		mu.Unlock()
	}))
	defer recv.Close()
	run := func(role string, args ...string) (int, string, string) { return cliRun(ctx, ag, role, "", args...) }

	if code, _, errs := run("admin", "notify", "set", "--webhook", recv.URL, "--classes", "fences"); code != 2 || !strings.Contains(errs, `"fences": use fence, node-failed, guest-failed, admission`) {
		t.Fatalf("bad class: exit %d %q", code, errs)
	}
	if code, _, errs := run("operator", "notify", "set", "--webhook", recv.URL); code != 1 || !strings.Contains(errs, `needs "admin"`) {
		t.Fatalf("operator: exit %d %q", code, errs)
	}
	if code, out, errs := run("admin", "notify", "set", "--webhook", recv.URL, "--classes", "fence,node-failed", "--auth", "Bearer x"); code != 0 || !strings.Contains(out, "1 notification webhooks set") {
		t.Fatalf("set: exit %d %q %q", code, out, errs)
	}
	if code, out, _ := run("admin", "notify", "show"); code != 0 || !strings.Contains(out, recv.URL) || !strings.Contains(out, "fence,node-failed") {
		t.Fatalf("show: exit %d %q", code, out)
	}
	if code, out, errs := run("admin", "notify", "test"); code != 0 || !strings.Contains(out, recv.URL+": received") {
		t.Fatalf("test: exit %d %q %q", code, out, errs)
	}
	mu.Lock()
	if len(got) != 1 || got[0].Class != notify.ClassTest || got[0].Cluster == "" || auth != "Bearer x" {
		t.Errorf("the receiver got %+v (auth %q)", got, auth)
	}
	mu.Unlock()
	recv.Close()
	if code, out, errs := run("admin", "notify", "test"); code != 1 || !strings.Contains(out, "NOT received") || !strings.Contains(errs, "1 of 1 webhooks did not receive the test") {
		t.Fatalf("test with the receiver gone: exit %d %q %q", code, out, errs)
	}
}
