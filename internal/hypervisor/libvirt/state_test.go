package libvirt

import (
	"testing"

	golibvirt "github.com/digitalocean/go-libvirt"

	"github.com/haven-ha/haven/internal/hypervisor"
)

func TestLifecycleEvent(t *testing.T) {
	tests := []struct {
		name          string
		event, detail int32
		kind          hypervisor.EventKind
		reason        string
		ok            bool
	}{
		{"booted", int32(golibvirt.DomainEventStarted), int32(golibvirt.DomainEventStartedBooted), hypervisor.EventStarted, "booted", true},
		{"incoming migration begins", int32(golibvirt.DomainEventStarted), int32(golibvirt.DomainEventStartedMigrated), "", "", false},
		{"io error", int32(golibvirt.DomainEventSuspended), int32(golibvirt.DomainEventSuspendedIoerror), hypervisor.EventPaused, "io-error", true},
		{"paused by migration", int32(golibvirt.DomainEventSuspended), int32(golibvirt.DomainEventSuspendedMigrated), "", "", false},
		{"user pause", int32(golibvirt.DomainEventSuspended), int32(golibvirt.DomainEventSuspendedPaused), hypervisor.EventPaused, "paused", true},
		{"incoming migration done", int32(golibvirt.DomainEventResumed), int32(golibvirt.DomainEventResumedMigrated), hypervisor.EventResumed, "migrated", true},
		{"unpaused", int32(golibvirt.DomainEventResumed), int32(golibvirt.DomainEventResumedUnpaused), hypervisor.EventResumed, "unpaused", true},
		{"shutdown", int32(golibvirt.DomainEventStopped), int32(golibvirt.DomainEventStoppedShutdown), hypervisor.EventStopped, "shutdown", true},
		{"destroyed", int32(golibvirt.DomainEventStopped), int32(golibvirt.DomainEventStoppedDestroyed), hypervisor.EventStopped, "destroyed", true},
		{"qemu died", int32(golibvirt.DomainEventStopped), int32(golibvirt.DomainEventStoppedFailed), hypervisor.EventCrashed, "qemu-died", true},
		{"crashed", int32(golibvirt.DomainEventStopped), int32(golibvirt.DomainEventStoppedCrashed), hypervisor.EventCrashed, "crashed", true},
		{"migrated away", int32(golibvirt.DomainEventStopped), int32(golibvirt.DomainEventStoppedMigrated), hypervisor.EventMigrated, "migrated", true},
		{"panicked", int32(golibvirt.DomainEventCrashed), int32(golibvirt.DomainEventCrashedPanicked), hypervisor.EventCrashed, "guest panicked", true},
		{"shutdown notice", int32(golibvirt.DomainEventShutdown), 0, "", "", false},
		{"defined", int32(golibvirt.DomainEventDefined), 0, "", "", false},
		{"unknown", 99, 0, "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kind, reason, ok := lifecycleEvent(tt.event, tt.detail)
			if kind != tt.kind || reason != tt.reason || ok != tt.ok {
				t.Errorf("lifecycleEvent(%d, %d) = %q, %q, %v; want %q, %q, %v", tt.event, tt.detail, kind, reason, ok, tt.kind, tt.reason, tt.ok)
			}
		})
	}
}

func TestDomainState(t *testing.T) {
	tests := []struct {
		state, reason int32
		want          hypervisor.State
		why           string
	}{
		{int32(golibvirt.DomainRunning), int32(golibvirt.DomainRunningBooted), hypervisor.Running, ""},
		{int32(golibvirt.DomainRunning), int32(golibvirt.DomainRunningMigrated), hypervisor.Running, "migrated"},
		{int32(golibvirt.DomainPaused), int32(golibvirt.DomainPausedIoerror), hypervisor.Paused, "io-error"},
		{int32(golibvirt.DomainPaused), int32(golibvirt.DomainPausedMigration), hypervisor.Paused, "migration"},
		{int32(golibvirt.DomainShutoff), int32(golibvirt.DomainShutoffCrashed), hypervisor.Shutoff, "crashed"},
		{int32(golibvirt.DomainShutoff), int32(golibvirt.DomainShutoffMigrated), hypervisor.Shutoff, "migrated"},
		{int32(golibvirt.DomainShutoff), int32(golibvirt.DomainShutoffDaemon), hypervisor.Shutoff, "daemon"},
		{int32(golibvirt.DomainCrashed), 0, hypervisor.Crashed, "panicked"},
		{int32(golibvirt.DomainShutdown), 0, hypervisor.Running, "shutting-down"},
		{int32(golibvirt.DomainNostate), 0, hypervisor.Shutoff, "no-state"},
	}
	for _, tt := range tests {
		got, why := domainState(tt.state, tt.reason)
		if got != tt.want || why != tt.why {
			t.Errorf("domainState(%d, %d) = %s %q, want %s %q", tt.state, tt.reason, got, why, tt.want, tt.why)
		}
	}
}

func TestExitReason(t *testing.T) {
	tests := []struct {
		status int
		want   string
	}{
		{9, "qemu-killed-by-SIGKILL"},
		{11 | 0x80, "qemu-killed-by-SIGSEGV"}, // core dumped
		{6, "qemu-killed-by-SIGABRT"},
		{1 << 8, "qemu-exit-1"},
		{0, "qemu-exit-0"},
	}
	for _, tt := range tests {
		if got := exitReason(tt.status); got != tt.want {
			t.Errorf("exitReason(%#x) = %q, want %q", tt.status, got, tt.want)
		}
	}
}
