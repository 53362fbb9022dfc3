package ha

import (
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/heartbeat"
)

// TestActOnceEndsOneSilenceOnce: a host's silence ends its lease once. A
// lease it takes while that same silence still shows (it booted again and
// registered before its heartbeats resumed) is left alone; a new silence,
// after it was heard again, is acted on.
func TestActOnceEndsOneSilenceOnce(t *testing.T) {
	f := &fastFail{}
	calls := 0
	act := func() bool { calls++; return true }
	gone := func(silence time.Duration) heartbeat.Verdict {
		return heartbeat.Verdict{State: heartbeat.Gone, Silence: silence}
	}
	f.actOnce("live", "h1", gone(1600*time.Millisecond), act)
	if calls != 1 {
		t.Fatalf("first silence: %d lease ends, want 1", calls)
	}
	// Moments later the same silence (last heard at the same time) names
	// the host's new lease: nothing is ended.
	f.actOnce("live", "h1", gone(1600*time.Millisecond+50*time.Millisecond), act)
	if calls != 1 {
		t.Fatalf("same silence again: %d lease ends, want 1", calls)
	}
	// Another kind of lease for the same silence is its own decision.
	f.actOnce("election", "h1", gone(1700*time.Millisecond), act)
	if calls != 2 {
		t.Fatalf("election lease: %d lease ends, want 2", calls)
	}
	// Heard from again since, then silent: a new silence.
	f.heard["live/h1"] = f.heard["live/h1"].Add(-10 * time.Second)
	f.actOnce("live", "h1", gone(1600*time.Millisecond), act)
	if calls != 3 {
		t.Fatalf("new silence: %d lease ends, want 3", calls)
	}
	// A failed attempt records nothing: it is tried again.
	f2 := &fastFail{}
	f2.actOnce("live", "h2", gone(2*time.Second), func() bool { return false })
	f2.actOnce("live", "h2", gone(2*time.Second), act)
	if calls != 4 {
		t.Fatalf("after a failed attempt: %d lease ends, want 4", calls)
	}
}
