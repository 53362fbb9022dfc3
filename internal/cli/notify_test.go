package cli

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/haven-ha/haven/internal/notify"
	"github.com/haven-ha/haven/internal/notify/notifytest"
	"github.com/haven-ha/haven/internal/store"
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
	if code, out, errs := run("admin", "notify", "test"); code != 1 || !strings.Contains(out, "NOT received") || !strings.Contains(errs, "1 of 1 receivers did not receive the test") {
		t.Fatalf("test with the receiver gone: exit %d %q %q", code, out, errs)
	}
}

// TestNotifyMailCLI: an admin sets mail notifications through a local
// relay and a test mail arrives; a bad configuration is refused with an
// error naming the field, by the CLI and by the API; the SMTP password is
// sealed in the store and never returned, and kept on an update only for
// the same server and user.
func TestNotifyMailCLI(t *testing.T) {
	ag, ctx := startAgent(t)
	run := func(stdin string, args ...string) (int, string, string) {
		return cliRun(ctx, ag, "admin", stdin, args...)
	}
	relay := notifytest.Start(t, nil, false)

	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--mail-server", "smtp.example.com", "--mail-from", "h@example.com", "--mail-to", "o@example.com"}, `mail.server "smtp.example.com": give the SMTP relay as host:port`},
		{[]string{"--mail-server", "smtp.example.com:99999", "--mail-from", "h@example.com", "--mail-to", "o@example.com"}, `port "99999" is not in 1..65535`},
		{[]string{"--mail-server", relay.Addr, "--mail-from", "h@example.com\r\nBcc: x@example.com", "--mail-to", "o@example.com"}, `mail.from: a line break is not allowed`},
		{[]string{"--mail-server", relay.Addr, "--mail-from", "h@example.com", "--mail-to", "o@example.com,nobody"}, `mail.to[1] "nobody": not an address`},
		{[]string{"--mail-server", relay.Addr, "--mail-tls", "none", "--mail-user", "u", "--mail-from", "h@example.com", "--mail-to", "o@example.com"}, `mail.tls: none sends no password in the clear`},
		{[]string{"--mail-to", "o@example.com"}, `--mail-server: give the SMTP relay`},
	} {
		args := append([]string{"notify", "set"}, tt.args...)
		if code, _, errs := run("", args...); code != 2 || !strings.Contains(errs, tt.want) {
			t.Errorf("notify set %q: exit %d %q; want 2 and %q", tt.args, code, errs, tt.want)
		}
	}
	// The API checks as much without the CLI.
	admin := ag.Clients["admin"]
	bad := notify.Config{Mail: &notify.Mail{Server: relay.Addr, From: "h@example.com", To: []string{"o@example.com\nBcc: x@example.com"}}}
	if err := admin.Do(ctx, "PUT", "/api/v1/notify", bad, nil); err == nil || !strings.Contains(err.Error(), "mail.to[0]: a line break is not allowed") {
		t.Errorf("the API took a recipient with a line break: %v", err)
	}

	// A local relay, no TLS, no password: the test mail arrives.
	if code, out, errs := run("", "notify", "set", "--mail-server", relay.Addr, "--mail-tls", "none", "--mail-from", "haven@example.com", "--mail-to", "ops@example.com"); code != 0 || !strings.Contains(out, "0 notification webhooks set, mail to ops@example.com") {
		t.Fatalf("set mail: exit %d %q %q", code, out, errs)
	}
	if code, out, errs := run("", "notify", "test"); code != 0 || !strings.Contains(out, "mailto:ops@example.com: received") {
		t.Fatalf("test: exit %d %q %q", code, out, errs)
	}
	if got := relay.Messages(); len(got) != 1 || got[0].From != "haven@example.com" || !strings.Contains(string(got[0].Data), "X-Haven-Class: test\r\n") {
		t.Errorf("the relay got %+v", got)
	}

	// With a password (STARTTLS; this relay is never reached).
	const pw = "pa55-w0rd!"
	setPW := []string{"notify", "set", "--webhook", "https://hooks.example.com/x", "--auth", "Bearer tok3n", "--mail-server", "smtp.example.com:587", "--mail-user", "haven", "--mail-from", "haven@example.com", "--mail-to", "ops@example.com"}
	if code, out, errs := run(pw+"\n", append(setPW, "--mail-password-stdin")...); code != 0 || strings.Contains(out, pw) {
		t.Fatalf("set with a password: exit %d %q %q", code, out, errs)
	}
	never := func(what, s string) {
		t.Helper()
		if strings.Contains(s, pw) || strings.Contains(s, "tok3n") {
			t.Errorf("%s shows a secret: %s", what, s)
		}
	}
	code, out, _ := run("", "notify", "show")
	never("notify show", out)
	if code != 0 || !strings.Contains(out, "Mail: to ops@example.com, from haven@example.com, via smtp.example.com:587 (starttls), user haven (password set)") {
		t.Errorf("show: exit %d %q", code, out)
	}
	code, out, _ = run("", "notify", "show", "-o", "json")
	never("notify show -o json", out)
	var shown notify.Config
	if err := json.Unmarshal([]byte(out), &shown); code != 0 || err != nil || shown.Mail == nil || shown.Mail.Password != notify.Redacted || shown.Webhooks[0].Header != notify.Redacted {
		t.Errorf("show -o json: exit %d %v %q", code, err, out)
	}
	var raw json.RawMessage
	if err := admin.Do(ctx, "GET", "/api/v1/notify", nil, &raw); err != nil {
		t.Fatal(err)
	}
	never("GET /api/v1/notify", string(raw))
	resp, err := ag.A.Store().Client().Get(ctx, store.KeyNotify)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("read the stored configuration: %v", err)
	}
	never("the store", string(resp.Kvs[0].Value))
	stored, err := ag.Cluster.NotifyConfig(ctx)
	if err != nil || stored.Mail.Password != pw || stored.Webhooks[0].Header != "Bearer tok3n" {
		t.Fatalf("the stored configuration opens to %+v %v", stored.Mail, err)
	}

	// Sending back what was read keeps the secrets; so does set without
	// the password, for the same server and user. Another server needs it.
	var back notify.Config
	if err := admin.Do(ctx, "PUT", "/api/v1/notify", shown, &back); err != nil || back.Mail.Password != notify.Redacted {
		t.Fatalf("PUT what GET gave: %v %+v", err, back.Mail)
	}
	if code, _, errs := run("", setPW...); code != 0 {
		t.Fatalf("set without the password: exit %d %q", code, errs)
	}
	if stored, err := ag.Cluster.NotifyConfig(ctx); err != nil || stored.Mail.Password != pw || stored.Webhooks[0].Header != "Bearer tok3n" {
		t.Errorf("after updates without the secrets: %+v %v", stored.Mail, err)
	}
	moved := append([]string{}, setPW...)
	moved[7] = "evil.example.com:587"
	if code, _, errs := run("", moved...); code != 1 || !strings.Contains(errs, "mail.password: give the password again") {
		t.Errorf("a relay moved elsewhere without its password: exit %d %q", code, errs)
	}
}
