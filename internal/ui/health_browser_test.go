package ui_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/testguest"
)

// TestBrowserHealthLive: the guest page follows a health check live, with
// no reload: when the checked port stops answering, "Health now" says
// fail within 2 s of the API saying so, and pass again within 2 s once the
// port answers again. A health check's change is no event of the log; it
// reaches the page through the event stream's report changes.
func TestBrowserHealthLive(t *testing.T) {
	needTool(t, "chromium", "chromium-browser", "google-chrome")
	c := startCluster(t)
	ctx := context.Background()
	if err := c.admin.Do(ctx, "POST", "/api/v1/users", api.UserRequest{Name: "ada", Role: api.RoleAdmin, Password: "ada's secret"}, nil); err != nil {
		t.Fatal(err)
	}
	// The checked port: a listener of this test on loopback, closed and
	// opened again on the same port.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	serve := func(ln net.Listener) {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}
	go serve(ln)
	defer func() { ln.Close() }()
	port := ln.Addr().(*net.TCPAddr).Port
	files := testguest.Build(t)
	// Many failures in a row before the guest counts as failed: the check
	// fails on purpose here, the guest must go on running.
	g := map[string]any{"name": "hl1", "memory": testguest.Memory, "node": "n2", "address": "127.0.0.1",
		"boot":   map[string]any{"kernel": files.Kernel, "initrd": files.Initrd, "cmdline": testguest.Cmdline},
		"health": []map[string]any{{"name": "port", "tcp": port, "interval": "1s", "failures": 1000, "start_grace": "1s"}}}
	if err := c.admin.Do(ctx, "POST", "/api/v1/guests", g, nil); err != nil {
		t.Fatal(err)
	}
	// apiHealth polls the API until hl1's check is ok (or not).
	apiHealth := func(ok bool) {
		t.Helper()
		pctx, cancel := context.WithTimeout(ctx, 120*time.Second)
		defer cancel()
		poll(pctx, t, fmt.Sprintf("hl1's check ok=%v in the API", ok), func() error {
			g, err := c.admin.Guest(pctx, "hl1")
			if err != nil {
				return err
			}
			if h := g.Runtime.Health; len(h) != 1 || h[0].OK != ok || (!ok && h[0].Failures == 0) {
				return fmt.Errorf("hl1 health %+v", h)
			}
			return nil
		})
	}
	apiHealth(true)

	b := newBrowser(t)
	login(t, b, c.base, "ada", "ada's secret")
	goTo(t, b, c.base, "#/guest/hl1", "#guest-health-now")
	run(t, b, "the guest page shows the check passing", 10*time.Second,
		waitText(`#guest-health-now`, "pass"), waitText(`#guest-health-now`, "port"))

	ln.Close()
	apiHealth(false)
	run(t, b, "the page shows the failing check, live", 2*time.Second,
		waitText(`#guest-health-now`, "fail"), waitText(`#guest-health-now`, "in a row"))

	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on %s again: %v", addr, err)
	}
	go serve(ln)
	apiHealth(true)
	run(t, b, "the page shows the check passing again, live", 2*time.Second,
		waitText(`#guest-health-now`, "pass"))
	if s := evalString(t, b, `document.querySelector('#guest-health-now').innerText`); s == "" || strings.Contains(s, "fail") {
		t.Fatalf("Health now says %q once the port answers again", s)
	}
}
