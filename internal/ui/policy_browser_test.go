package ui_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/notify"
	"github.com/haven-ha/haven/internal/notify/notifytest"
)

// TestBrowserPolicyAndNotify: on the hosts page a viewer sees the cluster
// policy read-only and no notifications; an admin changes the policies
// (a bad value refused next to its field, as the API refuses it), and
// sets up mail notifications through a local relay that receives the
// test mail; the SMTP password never comes back to the page.
func TestBrowserPolicyAndNotify(t *testing.T) {
	needTool(t, "chromium", "chromium-browser", "google-chrome")
	c := startCluster(t)
	ctx := context.Background()
	for _, u := range []api.UserRequest{{Name: "ada", Role: api.RoleAdmin, Password: "ada's secret"}, {Name: "vic", Role: api.RoleViewer, Password: "vic's secret"}} {
		if err := c.admin.Do(ctx, "POST", "/api/v1/users", u, nil); err != nil {
			t.Fatal(err)
		}
	}
	b := newBrowser(t)
	set := func(sel, value string) chromedp.Action[chromedp.Void] {
		return script(fmt.Sprintf(`(() => { const e = document.querySelector(%q); e.value = %q; })()`, sel, value))
	}

	login(t, b, c.base, "vic", "vic's secret")
	goTo(t, b, c.base, "#/hosts", "#policy-form")
	if s := evalString(t, b, `[...document.querySelectorAll('#policy-form select, #policy-form input')].map((e) => e.name + ':' + e.disabled).filter((x) => !x.endsWith(':true')).join(' ')`); s != "" {
		t.Fatalf("a viewer may edit policy fields: %s", s)
	}
	if s := evalString(t, b, `document.querySelector('#policy-form select[name="quorum_loss"]').value`); s != "stop" {
		t.Fatalf("a viewer sees quorum loss %q, want the default stop", s)
	}
	if n := evalInt(t, b, `document.querySelectorAll('#policy-form button[type=submit], #notify-form').length`); n != 0 {
		t.Fatalf("a viewer gets %d save buttons or notification forms", n)
	}
	logout(t, b)

	login(t, b, c.base, "ada", "ada's secret")
	goTo(t, b, c.base, "#/hosts", "#policy-form")
	run(t, b, "save admission control at 150 percent", 30*time.Second,
		set(`#policy-form select[name="reserve"]`, "percent"),
		set(`#policy-form input[name="reserve_n"]`, "150"),
		click(`#policy-form button[type="submit"]`),
		waitText(`#policy-form [data-error-for="reserve"]`, "percent 0..100"))
	run(t, b, "save quorum loss freeze, preemption, reserve of one host, manual rebalancing", 30*time.Second,
		set(`#policy-form select[name="quorum_loss"]`, "freeze"),
		set(`#policy-form select[name="preemption"]`, "on"),
		set(`#policy-form select[name="reserve"]`, "hosts"),
		set(`#policy-form input[name="reserve_n"]`, "1"),
		set(`#policy-form select[name="balance"]`, "manual"),
		set(`#policy-form input[name="threshold"]`, "30"),
		set(`#policy-form input[name="cooldown"]`, "15m"),
		click(`#policy-form button[type="submit"]`),
		waitText(`body`, "Policy saved"))
	p, err := c.admin.Policy(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if p.QuorumLoss != model.QuorumLossFreeze || !p.Preemption || p.Reserve != (model.Reserve{Hosts: 1}) || p.Fencing != model.FencingAgent || p.Hold ||
		p.Balance != (model.Balance{Mode: model.BalanceManual, Threshold: 30, Cooldown: 15 * time.Minute}) || p.EffectiveCapacity() != model.DefaultCapacity() {
		t.Fatalf("the policy after the edit: %+v", p)
	}
	if s := evalString(t, b, `document.querySelector('#policy-form input[name="cooldown"]').value`); s != "15m" {
		t.Fatalf("after saving, the cool-down field holds %q", s)
	}

	// Notifications: mail through a local relay.
	relay := notifytest.Start(t, nil, false)
	run(t, b, "save mail with a bad recipient", 30*time.Second,
		chromedp.WaitVisible(css(`#notify-form`)),
		script(`document.querySelector('#notify-form input[name="mail_on"]').checked = true`),
		set(`#notify-form input[name="mail_server"]`, relay.Addr),
		set(`#notify-form select[name="mail_tls"]`, "none"),
		set(`#notify-form input[name="mail_from"]`, "haven@example.com"),
		set(`#notify-form input[name="mail_to"]`, "ops"),
		click(`#notify-form button[type="submit"]`),
		waitText(`#notify-form [data-error-for="mail"]`, `mail.to[0] "ops": not an address`))
	run(t, b, "save mail to ops@example.com and send a test", 30*time.Second,
		set(`#notify-form input[name="mail_to"]`, "ops@example.com"),
		click(`#notify-form button[type="submit"]`),
		waitText(`body`, "Notifications saved"),
		click(`#notify-test`),
		waitText(`#notify-results`, "received mailto:ops@example.com"))
	if got := relay.Wait(1, 30*time.Second); len(got) != 1 || strings.Join(got[0].To, ",") != "ops@example.com" || !strings.Contains(string(got[0].Data), "X-Haven-Class: test") {
		t.Fatalf("the relay got %+v", got)
	}

	// A password: sealed, shown as ********, kept when the form is saved
	// again unchanged.
	const pw = "pa55-w0rd!"
	run(t, b, "save mail with a user and password", 30*time.Second,
		set(`#notify-form input[name="mail_server"]`, "smtp.example.com:587"),
		set(`#notify-form select[name="mail_tls"]`, "starttls"),
		set(`#notify-form input[name="mail_user"]`, "haven"),
		set(`#notify-form input[name="mail_password"]`, pw),
		click(`#notify-form button[type="submit"]`),
		waitText(`body`, "Notifications saved"))
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	poll(pctx, t, "the page to show the password as ********", func() error {
		if s := evalString(t, b, `document.querySelector('#notify-form input[name="mail_password"]').value`); s != notify.Redacted {
			return fmt.Errorf("the password field holds %q", s)
		}
		return nil
	})
	run(t, b, "save again unchanged", 30*time.Second,
		click(`#notify-form button[type="submit"]`),
		waitText(`body`, "Notifications saved"))
	var raw json.RawMessage
	if err := c.admin.Do(ctx, "GET", "/api/v1/notify", nil, &raw); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), pw) || strings.Contains(evalString(t, b, `document.documentElement.outerHTML`), pw) {
		t.Fatalf("the password is shown: %s", raw)
	}
	var nc notify.Config
	if err := json.Unmarshal(raw, &nc); err != nil || nc.Mail == nil || nc.Mail.Server != "smtp.example.com:587" || nc.Mail.User != "haven" || nc.Mail.Password != notify.Redacted {
		t.Fatalf("the configuration after the edits: %s (%v)", raw, err)
	}
}
