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

	// The CPU model: a bad one is refused next to the field, a good one is
	// saved and the page shows the model the guest would start with.
	setField := func(what, form, name, value string) {
		t.Helper()
		sel := fmt.Sprintf(`%s input[name="%s"]`, form, name)
		run(t, b, what, 10*time.Second,
			script(fmt.Sprintf(`document.querySelector('%s').value = ''`, sel)),
			typeText(sel, value),
			click(form+` button[type="submit"]`))
	}
	goTo(t, b, c.base, "#/guest/tg-db", `button[data-action="edit"]`)
	run(t, b, "open tg-db's editor", 10*time.Second,
		click(`button[data-action="edit"]`),
		chromedp.WaitVisible(css(`#guest-edit input[name="cpu_model"]`)))
	setField("save a bad CPU model", "#guest-edit", "cpu_model", "no model!")
	run(t, b, "the bad CPU model is refused next to the field", 10*time.Second,
		waitText(`#guest-edit [data-error-for="cpu_model"]`, "is not a CPU model name"))
	setField("save CPU model x86-64-v2", "#guest-edit", "cpu_model", "x86-64-v2")
	run(t, b, "the page shows the guest's CPU model", 10*time.Second,
		chromedp.WaitNotPresent(css(`#guest-edit`)),
		waitText(`#guest-cpu-model`, "x86-64-v2 (set for this guest)"))
	if g, err := c.admin.Guest(ctx, "tg-db"); err != nil || g.Spec.CPUModel != "x86-64-v2" || g.Runtime.CPUModel != "x86-64-v2" {
		t.Fatalf("tg-db after setting its CPU model: %+v, %v", g, err)
	}

	// The New-guest form takes a CPU model: a bad one is refused next to the
	// field, a good one reaches the API.
	goTo(t, b, c.base, "#/new", "#guest-form")
	run(t, b, "create a guest with a bad CPU model", 30*time.Second,
		typeText(`#g-name`, "tg-cpu"),
		chromedp.SetValue(css(`#g-memory`), "128MiB"),
		chromedp.SetValue(css(`#g-state`), "stopped"),
		chromedp.SetValue(css(`#g-boot-kernel`), files.Kernel),
		chromedp.SetValue(css(`#g-boot-initrd`), files.Initrd),
		chromedp.SetValue(css(`#g-boot-cmdline`), testguest.Cmdline),
		typeText(`#g-cpu_model`, "no model!"),
		click(`#guest-form button[type=submit]`),
		waitText(`#guest-form [data-error-for="cpu_model"]`, "is not a CPU model name"))
	run(t, b, "create it with CPU model x86-64-v2", 30*time.Second,
		chromedp.SetValue(css(`#g-cpu_model`), "x86-64-v2"),
		click(`#guest-form button[type=submit]`),
		waitText(`#view h1`, "tg-cpu"),
		waitText(`#guest-cpu-model`, "x86-64-v2 (set for this guest)"))
	if g, err := c.admin.Guest(ctx, "tg-cpu"); err != nil || g.Spec.CPUModel != "x86-64-v2" || g.Spec.State != model.DesiredStopped {
		t.Fatalf("tg-cpu created through the form: %+v, %v", g, err)
	}

	// The cluster policy on the hosts page: the effective capacity, and an
	// admin changes the vCPU overcommit (a bad value is refused next to it).
	goTo(t, b, c.base, "#/hosts", "#capacity-form")
	if s := evalString(t, b, `document.querySelector('#capacity-form input[name="memory_reserve"]').value`); s != "1GiB" {
		t.Fatalf("the memory reserve field holds %q, want the default 1GiB", s)
	}
	setField("save a negative overcommit", "#capacity-form", "cpu_overcommit", "-1")
	run(t, b, "the bad overcommit is refused next to the field", 10*time.Second,
		waitText(`#capacity-form [data-error-for="capacity.cpu_overcommit"]`, "-1 is not 0 (off) or a ratio"))
	setField("save overcommit 2.5", "#capacity-form", "cpu_overcommit", "2.5")
	run(t, b, "the save is confirmed", 10*time.Second, waitText(`body`, "Capacity saved"))
	p, err := c.admin.Policy(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := p.EffectiveCapacity(), (model.Capacity{CPUOvercommit: 2.5, CPUReserve: 1, MemoryReserve: model.GiB, GuestOverhead: 64 * model.MiB, CPUModel: model.CPUModelAuto}); got != want {
		t.Fatalf("capacity after the edit: %+v, want %+v", got, want)
	}
	if s := evalString(t, b, `document.querySelector('#capacity-form input[name="cpu_overcommit"]').value`); s != "2.5" {
		t.Fatalf("after saving, the overcommit field holds %q, want 2.5", s)
	}
}
