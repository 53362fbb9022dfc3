package ui_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/haven-ha/haven/internal/api/apitest"
	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/model"
	// The agent started in-process serves the UI.
)

// TestBrowserScale loads the overview of a cluster of 64 hosts and 2,000
// guests in Chromium, filters it, and checks that an update reaches the
// page. It logs the times it measured (they are not asserted).
func TestBrowserScale(t *testing.T) {
	needTool(t, "chromium", "chromium-browser", "google-chrome")
	if testing.Short() {
		t.Skip("builds a cluster record of 2,000 guests")
	}
	ag, err := apitest.Start("n1", "")
	if err != nil {
		t.Fatalf("start agent: %v", err)
	}
	t.Cleanup(ag.Stop)
	ctx := context.Background()
	hosts := []string{"n1"}
	for i := 2; i <= 64; i++ {
		h := fmt.Sprintf("h%02d", i)
		if err := ag.RegisterNode(ctx, h); err != nil {
			t.Fatal(err)
		}
		hosts = append(hosts, h)
	}
	const guests = 2000
	start := time.Now()
	for i := 1; i <= guests; i++ {
		spec := model.DefaultGuestSpec(fmt.Sprintf("g-%04d", i))
		spec.Memory = 512 * model.MiB
		spec.State = model.DesiredStopped
		spec.Node = hosts[i%len(hosts)]
		if err := ag.Cluster.CreateGuest(ctx, cluster.Guest{Spec: spec}, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("stored %d guests in %v", guests, time.Since(start).Round(time.Millisecond))

	b := newBrowser(t)
	start = time.Now()
	run(t, b, "log in with the admin token", 60*time.Second,
		chromedp.Navigate(ag.URL()+"/"),
		chromedp.WaitVisible(css(`#login`)),
		chromedp.Click(css(`#login button.link`)),
		typeText(`#login input[name=token]`, ag.Tokens["admin"]),
		chromedp.Click(css(`#login button[type=submit]`)),
		waitJS(`document.querySelectorAll('#hosts .chip[data-guest]').length`, guests))
	t.Logf("login to an overview of %d hosts and %d guest chips: %v", len(hosts), guests, time.Since(start).Round(time.Millisecond))
	if n := evalInt(t, b, `document.querySelectorAll('#hosts .host').length`); n != len(hosts) {
		t.Errorf("%d host cards, want %d", n, len(hosts))
	}
	elems := evalInt(t, b, `document.querySelectorAll('#view *').length`)
	t.Logf("overview DOM: %d elements (%.2f per guest)", elems, float64(elems)/guests)
	if elems > 3*guests+40*len(hosts)+200 {
		t.Errorf("overview uses %d elements for %d guests and %d hosts: too heavy", elems, guests, len(hosts))
	}
	heap := evalInt(t, b, `performance.memory ? performance.memory.usedJSHeapSize : 0`)
	t.Logf("page JS heap: %.1f MiB", float64(heap)/(1<<20))

	start = time.Now()
	run(t, b, "filter", 30*time.Second,
		typeText(`#filter`, "g-1234"),
		waitJS(`document.querySelectorAll('#hosts .chip:not(.hide)').length`, 1),
		waitJS(`document.querySelectorAll('#hosts .host:not(.hide)').length`, 1))
	t.Logf("filter to one guest: %v", time.Since(start).Round(time.Millisecond))
	run(t, b, "clear the filter", 30*time.Second,
		script(`const f = document.getElementById('filter'); f.value = ''; f.dispatchEvent(new Event('input'))`),
		waitJS(`document.querySelectorAll('#hosts .chip:not(.hide)').length`, guests))

	// A change reaches the page through the event stream.
	start = time.Now()
	if err := ag.Clients["admin"].Do(ctx, "DELETE", "/api/v1/guests/g-0002", nil, nil); err != nil {
		t.Fatal(err)
	}
	run(t, b, "deleted guest leaves the overview", 30*time.Second,
		waitJS(`document.querySelectorAll('#hosts .chip[data-guest]').length`, guests-1))
	t.Logf("a deleted guest left the overview %v after the API call", time.Since(start).Round(time.Millisecond))

	goTo(t, b, ag.URL(), "#/guests", "#guest-table")
	run(t, b, "guest table", 30*time.Second, waitJS(`document.querySelectorAll('#guest-table tbody tr').length`, 500))
	shot(t, b, "scale-guests")
	goTo(t, b, ag.URL(), "#/", "#hosts")
	shot(t, b, "scale-overview")
}

// waitJS waits until the JavaScript expression's value is want.
func waitJS(js string, want int) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		var got int
		var err error
		for {
			got, err = chromedp.Evaluate[int](js)(ctx, tg)
			if err == nil && got == want {
				return nil
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("waiting for %s to be %d (now %d, %v): %w", js, want, got, err, ctx.Err())
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
}
