package ui_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/testguest"
)

// TestBrowserGuestTags: the guest list filters by tag, the guest page shows
// the tags, and ticking guests offers bulk actions that reach the API.
func TestBrowserGuestTags(t *testing.T) {
	needTool(t, "chromium", "chromium-browser", "google-chrome")
	c := startCluster(t)
	ctx := context.Background()
	if err := c.admin.Do(ctx, "POST", "/api/v1/users", api.UserRequest{Name: "ada", Role: api.RoleAdmin, Password: "ada's secret"}, nil); err != nil {
		t.Fatal(err)
	}
	files := testguest.Build(t)
	boot := map[string]any{"kernel": files.Kernel, "initrd": files.Initrd, "cmdline": testguest.Cmdline}
	for _, g := range []map[string]any{
		{"name": "tg-web", "memory": "128MiB", "state": "stopped", "boot": boot, "tags": []string{"prod", "web"}},
		{"name": "tg-db", "memory": "128MiB", "state": "stopped", "boot": boot, "tags": []string{"db"}},
		{"name": "tg-none", "memory": "128MiB", "state": "stopped", "boot": boot},
	} {
		if _, err := c.admin.CreateGuest(ctx, g); err != nil {
			t.Fatalf("create %v: %v", g["name"], err)
		}
	}
	b := newBrowser(t)
	login(t, b, c.base, "ada", "ada's secret")
	goTo(t, b, c.base, "#/guests", "#guest-table")
	run(t, b, "every guest is listed with its tags", 20*time.Second,
		chromedp.WaitVisible(css(`tr[data-guest="tg-none"]`)),
		waitText(`tr[data-guest="tg-web"] td.tags`, "prod"),
		waitText(`#tag-filter`, "db"))
	run(t, b, "filter by tag prod", 10*time.Second,
		script(`(() => { const s = document.querySelector('#tag-filter'); s.value = 'prod'; s.dispatchEvent(new Event('change')); })()`))
	if n := evalInt(t, b, `document.querySelectorAll('#guest-table tbody tr[data-guest]').length`); n != 1 {
		t.Fatalf("with tag prod, %d rows are shown: %s", n, evalString(t, b, `document.querySelector('#guest-table tbody').innerText`))
	}
	if s := evalString(t, b, `document.querySelector('#guest-table tbody tr[data-guest]').dataset.guest`); s != "tg-web" {
		t.Fatalf("with tag prod, the row shown is %q", s)
	}
	// Bulk: tick every guest shown (tg-web only) and start them.
	run(t, b, "select all shown and start", 20*time.Second,
		click(`#select-all`),
		waitText(`#bulk`, "1 selected"),
		click(`#bulk button[data-bulk="start"]`))
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	poll(pctx, t, "tg-web to be started by the bulk action", func() error {
		g, err := c.admin.Guest(pctx, "tg-web")
		if err != nil {
			return err
		}
		if g.Spec.State != model.DesiredStarted {
			return fmt.Errorf("tg-web desired %s", g.Spec.State)
		}
		return nil
	})
	for _, n := range []string{"tg-db", "tg-none"} {
		if g, err := c.admin.Guest(ctx, n); err != nil || g.Spec.State != model.DesiredStopped {
			t.Fatalf("%s, not selected, is %+v (%v)", n, g, err)
		}
	}
	goTo(t, b, c.base, "#/guest/tg-web", "#guest-tags")
	run(t, b, "the guest page shows the tags", 10*time.Second, waitText(`#guest-tags`, "web"))

	// Edit the tags on the guest page: a bad tag is refused next to the
	// field, good ones are saved and shown, and an empty field clears them.
	setTags := func(what, tags string) {
		t.Helper()
		run(t, b, what, 10*time.Second,
			script(`document.querySelector('#guest-edit input[name="tags"]').value = ''`),
			typeText(`#guest-edit input[name="tags"]`, tags),
			click(`#guest-edit button[type="submit"]`))
	}
	run(t, b, "open the editor with the tags filled in", 10*time.Second,
		click(`button[data-action="edit"]`),
		chromedp.WaitVisible(css(`#guest-edit input[name="tags"]`)))
	if s := evalString(t, b, `document.querySelector('#guest-edit input[name="tags"]').value`); s != "prod web" {
		t.Fatalf("the tags field holds %q, want \"prod web\"", s)
	}
	setTags("save a bad tag", "prod Bad!")
	run(t, b, "the bad tag is refused next to the field", 10*time.Second,
		waitText(`#guest-edit [data-error-for="tags"]`, `"Bad!" is not a valid tag`))
	setTags("save good tags", "prod, api  canary")
	run(t, b, "the page shows the new tags", 10*time.Second,
		chromedp.WaitNotPresent(css(`#guest-edit`)),
		waitText(`#guest-tags`, "canary"))
	g, err := c.admin.Guest(ctx, "tg-web")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(g.Spec.Tags, " "); got != "prod api canary" {
		t.Fatalf("tg-web's tags after the edit: %q, want \"prod api canary\"", got)
	}
	run(t, b, "reopen the editor", 10*time.Second,
		click(`button[data-action="edit"]`),
		chromedp.WaitVisible(css(`#guest-edit input[name="tags"]`)))
	setTags("clear the tags", "")
	run(t, b, "the page shows no tags", 10*time.Second,
		chromedp.WaitNotPresent(css(`#guest-edit`)),
		chromedp.WaitNotPresent(css(`#guest-tags`)))
	if g, err := c.admin.Guest(ctx, "tg-web"); err != nil || len(g.Spec.Tags) != 0 {
		t.Fatalf("tg-web after clearing its tags: %+v, %v", g.Spec.Tags, err)
	}
}
