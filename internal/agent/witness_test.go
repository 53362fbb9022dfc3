package agent

import (
	"strings"
	"testing"
)

func TestWitnessRunsNoHypervisor(t *testing.T) {
	base := Config{Node: "w", DataDir: t.TempDir(), Listen: "127.0.0.1:7400", PeerListen: "127.0.0.1:7401"}
	cfg := base
	cfg.Witness, cfg.Hypervisor = true, "qemu"
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "--witness runs no guests") {
		t.Fatalf("a witness with a hypervisor: %v", err)
	}
	cfg.Hypervisor = ""
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := a.Config().Hypervisor; got != "none" {
		t.Fatalf("witness hypervisor %q, want none", got)
	}
	if got := a.Config().HeartbeatListen; got != "127.0.0.1:7403" {
		t.Fatalf("heartbeat address %q, want the API port + 3", got)
	}
	cfg = base
	cfg.HeartbeatListen = "nonsense"
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "--heartbeat-listen") {
		t.Fatalf("a bad heartbeat address: %v", err)
	}
}
