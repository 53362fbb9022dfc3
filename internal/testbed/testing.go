package testbed

import (
	"context"
	"os"
	"time"
)

// TB is the part of testing.TB that ForTest uses (kept small so this
// package does not import testing into binaries).
type TB interface {
	Helper()
	Cleanup(func())
	Fatalf(format string, args ...any)
	Skipf(format string, args ...any)
	Logf(format string, args ...any)
}

// ForTest builds a bed for a test and tears it down in t.Cleanup, even when
// the test fails. Without root or the tools it skips the test, except when
// CI=true, where it fails it.
func ForTest(t TB, opts Options) *Bed {
	t.Helper()
	missing := ""
	if os.Geteuid() != 0 {
		missing = ErrNotRoot.Error()
	} else if err := RequireTools(); err != nil {
		missing = err.Error()
	}
	if missing != "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("test bed: %s", missing)
		}
		t.Skipf("test bed: %s", missing)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b, err := New(ctx, opts)
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := b.Destroy(ctx); err != nil {
			t.Logf("%v", err)
		}
	})
	return b
}
