package ha

import (
	"testing"

	"github.com/haven-ha/haven/internal/manager"
	"github.com/haven-ha/haven/internal/store"
)

// The daemon's lease defaults are the ones the simulator proves the rules
// with: they must not drift apart.
func TestDaemonTimingsAreTheManagers(t *testing.T) {
	mt := manager.DefaultTimings()
	if store.DefaultLeaseTTL != mt.LeaseTTL || store.DefaultKeepAlive != mt.Keepalive {
		t.Fatalf("agent lease defaults TTL %v keepalive %v differ from the manager's %v / %v",
			store.DefaultLeaseTTL, store.DefaultKeepAlive, mt.LeaseTTL, mt.Keepalive)
	}
	if err := WatchdogTiming(mt).Validate(); err != nil {
		t.Fatalf("default watchdog timing is refused: %v", err)
	}
}
