package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/health"
	"github.com/haven-ha/haven/internal/model"
)

// haven guest show prints each check's live status.
func TestPrintGuestHealthNow(t *testing.T) {
	at := time.Date(2026, 12, 6, 5, 0, 0, 0, time.UTC)
	g := &api.GuestInfo{Name: "web1", Spec: model.DefaultGuestSpec("web1"), Runtime: api.GuestRuntime{State: "started", Node: "n1", Running: true,
		Health: []health.Result{
			{Check: "http", Kind: "http", OK: false, Failures: 2, Output: "GET http://10.0.0.5/: status 503, want 200", At: at},
			{Check: "port", Kind: "tcp", OK: false, Failures: 0, Output: "connect 10.0.0.5:22: refused", At: at},
			{Check: "heartbeat", Kind: "agent", OK: true, At: at}}}}
	var b bytes.Buffer
	printGuest(&b, g)
	out := b.String()
	for _, w := range []string{
		`Check now:   http: FAILING (2 in a row) at `, `"GET http://10.0.0.5/: status 503, want 200"`,
		`Check now:   port: failing (in its start grace: not counted)`,
		`Check now:   heartbeat: passing at `,
	} {
		if !strings.Contains(out, w) {
			t.Errorf("guest show lacks %q:\n%s", w, out)
		}
	}
}
