package manager

import (
	"testing"
	"time"
)

func TestRestartDelayDoublesUpToACap(t *testing.T) {
	d := 100 * time.Millisecond
	for n, want := range map[int]time.Duration{0: d, 1: d, 2: 2 * d, 3: 4 * d, 6: 32 * d, 7: 32 * d, 1000: 32 * d} {
		if got := restartDelay(d, n); got != want {
			t.Errorf("restart %d: delay %v, want %v", n, got, want)
		}
	}
}
