package ui_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/api/client"
	"github.com/haven-ha/haven/internal/pki"
	"github.com/haven-ha/haven/internal/testguest"
)

// TestBrowserConsole: an admin opens the serial console of a guest that
// runs on n2 from n1's web UI (n1 proxies the session to n2), types a
// command into the terminal and sees the guest's answer. The session is in
// the audit log; a viewer may not open a console.
func TestBrowserConsole(t *testing.T) {
	needTool(t, "chromium", "chromium-browser", "google-chrome")
	c := startCluster(t)
	ctx := context.Background()
	for _, u := range []api.UserRequest{
		{Name: "ada", Role: api.RoleAdmin, Password: "ada's secret"},
	} {
		if err := c.admin.Do(ctx, "POST", "/api/v1/users", u, nil); err != nil {
			t.Fatalf("add user %s: %v", u.Name, err)
		}
	}
	files := testguest.Build(t)
	// con1's health check: a TCP connect to a listener of this test on
	// loopback (its host dials it), so its live status can be shown.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	for _, g := range []map[string]any{
		{"name": "con1", "memory": testguest.Memory, "node": "n2", "boot": map[string]any{"kernel": files.Kernel, "initrd": files.Initrd, "cmdline": testguest.Cmdline},
			"address": "127.0.0.1", "health": []map[string]any{{"name": "port", "tcp": port, "interval": "1s"}}},
		{"name": "vnc1", "memory": testguest.Memory, "node": "n2", "display": "vnc", "boot": map[string]any{"kernel": files.Kernel, "initrd": files.Initrd, "cmdline": testguest.Cmdline}},
	} {
		if err := c.admin.Do(ctx, "POST", "/api/v1/guests", g, nil); err != nil {
			t.Fatalf("create guest %s: %v", g["name"], err)
		}
	}
	rctx, cancel := context.WithTimeout(ctx, 120*time.Second)
	for _, name := range []string{"con1", "vnc1"} {
		poll(rctx, t, name+" to run on n2", func() error {
			st, node, err := guestRuntime(rctx, c.admin, name)
			if err != nil {
				return err
			}
			if st != "started" || node != "n2" {
				return fmt.Errorf("%s is %s on %q", name, st, node)
			}
			g, err := c.admin.Guest(rctx, name)
			if err != nil || !g.Runtime.Running {
				return fmt.Errorf("%s not running yet (%v)", name, err)
			}
			return nil
		})
	}
	poll(rctx, t, "con1's passing health check in its runtime", func() error {
		g, err := c.admin.Guest(rctx, "con1")
		if err != nil {
			return err
		}
		if h := g.Runtime.Health; len(h) != 1 || h[0].Check != "port" || !h[0].OK {
			return fmt.Errorf("con1 health %+v", h)
		}
		return nil
	})
	cancel()

	b := newBrowser(t)
	login(t, b, c.base, "ada", "ada's secret")
	goTo(t, b, c.base, "#/guest/con1", `button[data-action="console"]`)
	run(t, b, "the guest page shows the live health status", 10*time.Second,
		waitText(`#guest-health-now`, "pass"), waitText(`#guest-health-now`, "port"))
	run(t, b, "open the console", 30*time.Second,
		click(`button[data-action="console"]`),
		waitText(`#console-status`, "Connected to the serial console of con1"),
		chromedp.WaitVisible(css(`#console-screen .xterm-rows`)))
	// The guest may still be booting: type the command until its shell
	// answers.
	deadline := time.Now().Add(120 * time.Second)
	for {
		run(t, b, "type a command", 10*time.Second,
			script(`document.querySelector('#console-screen .xterm-helper-textarea').focus()`),
			typeLine("echo hv-$((6*7))"))
		sctx, scancel := context.WithTimeout(b, 5*time.Second)
		err := chromedp.Do(sctx, waitText(`#console-screen .xterm-rows`, "hv-42"))
		scancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the guest never answered on its console: %v", err)
		}
	}
	shot(t, b, "console")
	run(t, b, "close the console", 20*time.Second, click(`button[data-action="close console"]`),
		chromedp.WaitNotPresent(css(`#console-screen`)))

	// The graphical display of vnc1, through n1 too: noVNC connects (the
	// RFB handshake with the guest's VNC server went through both agents).
	goTo(t, b, c.base, "#/guest/vnc1", `button[data-action="display"]`)
	run(t, b, "open the display", 60*time.Second,
		click(`button[data-action="display"]`),
		waitText(`#display-status`, "Connected to the display of vnc1"),
		chromedp.WaitVisible(css(`#display-screen canvas`)))
	shot(t, b, "display")
	run(t, b, "close the display", 20*time.Second, click(`button[data-action="close display"]`),
		chromedp.WaitNotPresent(css(`#display-screen`)))

	// The audit log has the session, opened and closed, by ada, on n2.
	var opened, closed bool
	actx, acancel := context.WithTimeout(ctx, 30*time.Second)
	defer acancel()
	poll(actx, t, "the console session in the audit log", func() error {
		evs, err := c.admin.Events(actx, client.EventFilter{N: 500})
		if err != nil {
			return err
		}
		for _, e := range evs {
			opened = opened || (e.Guest == "con1" && strings.Contains(e.Msg, "opened the serial console of con1 on n2") && strings.Contains(e.Who, "ada"))
			closed = closed || (e.Guest == "con1" && strings.Contains(e.Msg, "closed the serial console of con1 on n2") && strings.Contains(e.Who, "ada"))
		}
		display := false
		for _, e := range evs {
			display = display || (e.Guest == "vnc1" && strings.Contains(e.Msg, "opened the graphical display (VNC) of vnc1 on n2") && strings.Contains(e.Who, "ada"))
		}
		if !opened || !closed || !display {
			return fmt.Errorf("console opened %v, closed %v; display opened %v", opened, closed, display)
		}
		return nil
	})

	// A viewer may not.
	vt, err := c.admin.CreateToken(ctx, api.TokenRequest{Role: api.RoleViewer, Name: "watcher"})
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(c.n1.dir, "data", "pki", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := pki.ClientTLS(caPEM, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	viewer := client.New(c.base, vt.Token, tlsCfg)
	defer viewer.Close()
	if _, err := viewer.OpenConsole(ctx, "con1"); !client.IsStatus(err, 403) {
		t.Errorf("a viewer opening a console: %v, want 403", err)
	}
}

// typeLine types text into the focused element as one piece of input (as
// a paste or an IME would: xterm.js takes it at once) and presses Enter.
func typeLine(text string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		if _, err := chromedp.Call(ctx, input.InsertText, input.InsertTextParams{Text: text}); err != nil {
			return err
		}
		for _, typ := range []input.DispatchKeyEventType{input.DispatchKeyEventTypeRawKeyDown, input.DispatchKeyEventTypeKeyUp} {
			if _, err := chromedp.Call(ctx, input.DispatchKeyEvent, input.DispatchKeyEventParams{Type: typ, Key: "Enter", Code: "Enter", WindowsVirtualKeyCode: 13}); err != nil {
				return err
			}
		}
		return nil
	})
}
