package ui_test

import (
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/haven-ha/haven/internal/ui"
)

// xterm.js styles its rows with <style> elements it writes itself, which
// the UI's policy (style-src 'self', no inline styles) blocks; console.js
// carries their rules into constructed style sheets (allowed by the policy)
// instead. Under the real policy the terminal must lay out its rows (the
// dimensions rule) and colour its text (the theme rule), with no violation.
func TestXtermUnderCSP(t *testing.T) {
	ctx := newBrowser(t)
	srv := httptest.NewServer(ui.Handler())
	defer srv.Close()
	run(t, ctx, "open the UI", 20*time.Second, chromedp.Navigate(srv.URL+"/"))
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	res, err := chromedp.Run(sctx, chromedp.Evaluate[map[string]any](`(async () => {
  const violations = [];
  document.addEventListener('securitypolicyviolation', (e) => violations.push(e.violatedDirective + ' ' + e.blockedURI));
  const {openConsole} = await import('/ui/views/console.js');
  const el = document.createElement('div');
  document.body.append(el);
  window.WebSocket = class { constructor() { setTimeout(() => this.onopen && this.onopen(), 0); } send() {} close() {} };
  openConsole(el, 'x', () => {});
  for (let i = 0; i < 100 && !el.querySelector('.xterm-rows'); i++) await new Promise((r) => setTimeout(r, 50));
  await new Promise((r) => setTimeout(r, 300));
  const rows = el.querySelector('.xterm-rows');
  const row = rows && rows.firstElementChild;
  return {violations, rows: !!rows, rowHeight: row ? row.getBoundingClientRect().height : 0,
    color: rows ? getComputedStyle(rows).color : ''};
})()`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", res)
	if png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot()); err == nil {
		p := filepath.Join(t.TempDir(), "xterm-csp.png")
		if os.WriteFile(p, png, 0o644) == nil {
			t.Logf("screenshot: %s", p)
		}
	}
	if v, _ := res["violations"].([]any); len(v) != 0 {
		t.Errorf("policy violations: %v", v)
	}
	// xterm's default theme: white text (the page's own ink is dark).
	if c := res["color"]; c != "rgb(255, 255, 255)" {
		t.Errorf("terminal text colour %v: xterm's theme rule was not applied", c)
	}
	if h, _ := res["rowHeight"].(float64); h <= 0 {
		t.Errorf("terminal rows have no height: %v", res)
	}
}
