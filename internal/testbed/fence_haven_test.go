package testbed

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/fence"
)

// Haven's own fencing (internal/fence) drives fence_testbed: the metadata
// validates, a node is fenced and confirmed off, and a failing device
// fails the fence.
func TestHavenFencesBedHosts(t *testing.T) {
	b := ForTest(t, Options{Hosts: 2})
	path, err := FenceAgentPath()
	if err != nil {
		t.Fatal(err)
	}
	cfg := fence.Config{
		Devices: []fence.Device{{
			Name: "bed", Agent: path, Params: b.FenceDeviceParams(),
			Plugs:   map[string]string{"n1": "h1", "n2": "h2"},
			Timeout: 20 * time.Second,
		}},
		Levels: map[string][]fence.Level{"n1": {{Devices: []string{"bed"}}}, "n2": {{Devices: []string{"bed"}}}},
	}
	f, err := fence.New(cfg, fence.Options{Runner: &fence.Runner{AgentDirs: []string{filepath.Dir(path)}}})
	if err != nil {
		t.Fatal(err)
	}
	if warnings, err := f.Validate(t.Context()); err != nil || len(warnings) > 0 {
		t.Fatalf("Validate: %v %v", warnings, err)
	}
	agent := startEcho(t, b.MustHost("h1"), FullHost, RoleAgent)
	other := startEcho(t, b.MustHost("h2"), FullHost, RoleAgent)

	res, err := f.Fence(t.Context(), "n1")
	if err != nil {
		t.Fatalf("fence n1: %v", err)
	}
	if !res.Confirmed {
		t.Errorf("fence of n1 not confirmed: %+v", res)
	}
	select {
	case <-agent.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("h1's agent survived fencing")
	}
	if other.Exited() || b.MustHost("h1").PoweredOn() {
		t.Fatalf("fencing n1: h2's agent exited=%v, h1 on=%v", other.Exited(), b.MustHost("h1").PoweredOn())
	}
	t.Logf("fenced n1 in %v", res.Duration)

	if err := b.FenceDeviceFail("h2", true); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Fence(context.Background(), "n2"); !errors.Is(err, fence.ErrFenceFailed) {
		t.Fatalf("fence through a failing device: %v, want ErrFenceFailed", err)
	}
	if other.Exited() {
		t.Error("a failing fence device killed h2's agent")
	}
}
