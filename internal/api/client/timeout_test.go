package client_test

import (
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/api/client"
)

// TestCommandWaitWithinRequestTimeout: a command endpoint's wait for the
// manager, and a previous release's (15 s), end well before the client
// gives up on the call: a slow manager is answered 202, not a timeout
// (a rolling-upgrade test failed so, against a previous release that
// waited exactly as long as the client).
func TestCommandWaitWithinRequestTimeout(t *testing.T) {
	const previousRelease = 15 * time.Second
	for _, wait := range []time.Duration{api.DefaultCommandWait, previousRelease} {
		if wait+5*time.Second > client.RequestTimeout {
			t.Errorf("a command endpoint waits %v, the client %v: less than 5 s for the checks and the answer", wait, client.RequestTimeout)
		}
	}
}
