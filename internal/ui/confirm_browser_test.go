package ui_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/testguest"
)

// TestBrowserConfirmOff: n2 dies (its agent and its guest killed, as by a
// power loss) while its fence device fails, so its guest waits, fencing. An
// admin sees n2 "being fenced" on the hosts page, confirms it off, accepts
// the warning, and the guest starts on n1.
func TestBrowserConfirmOff(t *testing.T) {
	needTool(t, "chromium", "chromium-browser", "google-chrome")
	c := startCluster(t)
	ctx := context.Background()
	if err := c.admin.Do(ctx, "POST", "/api/v1/users", api.UserRequest{Name: "ada", Role: api.RoleAdmin, Password: "ada's secret"}, nil); err != nil {
		t.Fatal(err)
	}
	spy, err := filepath.Abs("../fence/testdata/fence_spy")
	if err != nil {
		t.Fatal(err)
	}
	// A fence device that fails every time (exit 1).
	fc := map[string]any{
		"devices": []map[string]any{{"name": "dead-pdu", "agent": spy, "params": map[string]string{"ip": "192.0.2.1", "exit": "1"}, "plugs": map[string]string{"n2": "2"}}},
		"levels":  map[string]any{"n2": []map[string]any{{"devices": []string{"dead-pdu"}}}},
	}
	if err := c.admin.Do(ctx, "PUT", "/api/v1/fence/config", fc, nil); err != nil {
		t.Fatalf("fence config: %v", err)
	}
	files := testguest.Build(t)
	if err := c.admin.Do(ctx, "POST", "/api/v1/guests", map[string]any{"name": "solo", "memory": "128MiB", "node": "n2",
		"boot": map[string]string{"kernel": files.Kernel, "initrd": files.Initrd, "cmdline": testguest.Cmdline}}, nil); err != nil {
		t.Fatalf("create guest: %v", err)
	}
	waitGuest := func(what, node string, within time.Duration) {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, within)
		defer cancel()
		poll(wctx, t, what, func() error {
			st, at, err := guestRuntime(wctx, c.admin, "solo")
			if err == nil && (st != "started" || at != node) {
				err = fmt.Errorf("solo is %s on %s", st, at)
			}
			return err
		})
	}
	waitGuest("solo running on n2", "n2", 120*time.Second)

	// Power loss of n2: its agent and its QEMU die at once.
	_ = syscall.Kill(-c.n2.cmd.Process.Pid, syscall.SIGKILL)
	<-c.n2.done
	c.n2.done <- nil // for the agent's cleanup, which waits on it
	testguest.KillUnder(c.n2.dir)
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	poll(wctx, t, "n2 failed and its fence failing", func() error {
		st, err := c.admin.Status(wctx)
		if err != nil {
			return err
		}
		for _, h := range st.Hosts {
			if h.Name == "n2" && h.HA == "failed" {
				return nil
			}
		}
		return fmt.Errorf("n2 not failed yet: %+v", st.Hosts)
	})
	cancel()
	if st, _, _ := guestRuntime(ctx, c.admin, "solo"); st != "fencing" {
		t.Fatalf("solo is %s while n2 cannot be fenced, want fencing", st)
	}

	b := newBrowser(t)
	login(t, b, c.base, "ada", "ada's secret")
	goTo(t, b, c.base, "#/hosts", `tr[data-host="n2"] button[data-action="confirm-off"]`)
	run(t, b, "confirm n2 off", 30*time.Second,
		// The page asks before it acts; say yes (and keep the question).
		script(`window.asked = ''; window.confirm = (q) => { window.asked = q; return true; }`),
		click(`tr[data-host="n2"] button[data-action="confirm-off"]`),
		waitText(`#toasts`, "n2 confirmed off"))
	sctx, scancel := context.WithTimeout(b, 10*time.Second)
	asked, err := chromedp.Run(sctx, chromedp.Evaluate[string](`window.asked`))
	scancel()
	if err != nil || !strings.Contains(asked, "run twice") {
		t.Errorf("the page did not warn before confirming n2 off (asked %q, %v)", asked, err)
	}
	waitGuest("solo running again on n1", "n1", 60*time.Second)
}
