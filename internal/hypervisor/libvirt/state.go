package libvirt

import (
	golibvirt "github.com/digitalocean/go-libvirt"

	"github.com/haven-ha/haven/internal/hypervisor"
)

// lifecycleEvent maps a libvirt lifecycle event (event type, detail) to
// Haven's event. ok is false for events Haven does not report: definitions,
// the intermediate steps of a migration, and the "shutdown" notice that a
// "stopped" event always follows.
func lifecycleEvent(event, detail int32) (kind hypervisor.EventKind, reason string, ok bool) {
	switch golibvirt.DomainEventType(event) {
	case golibvirt.DomainEventStarted:
		switch golibvirt.DomainEventStartedDetailType(detail) {
		case golibvirt.DomainEventStartedMigrated:
			// An incoming migration began here; the guest runs here only
			// once "resumed/migrated" arrives.
			return "", "", false
		case golibvirt.DomainEventStartedRestored:
			return hypervisor.EventStarted, "restored", true
		case golibvirt.DomainEventStartedFromSnapshot:
			return hypervisor.EventStarted, "from-snapshot", true
		case golibvirt.DomainEventStartedWakeup:
			return hypervisor.EventStarted, "wakeup", true
		}
		return hypervisor.EventStarted, "booted", true
	case golibvirt.DomainEventSuspended:
		switch golibvirt.DomainEventSuspendedDetailType(detail) {
		case golibvirt.DomainEventSuspendedMigrated, golibvirt.DomainEventSuspendedPostcopy:
			return "", "", false // the last phase of an outgoing migration
		case golibvirt.DomainEventSuspendedIoerror:
			return hypervisor.EventPaused, "io-error", true
		case golibvirt.DomainEventSuspendedWatchdog:
			return hypervisor.EventPaused, "watchdog", true
		case golibvirt.DomainEventSuspendedAPIError:
			return hypervisor.EventPaused, "api-error", true
		case golibvirt.DomainEventSuspendedPostcopyFailed:
			return hypervisor.EventPaused, "postcopy-failed", true
		}
		return hypervisor.EventPaused, "paused", true
	case golibvirt.DomainEventResumed:
		switch golibvirt.DomainEventResumedDetailType(detail) {
		case golibvirt.DomainEventResumedMigrated, golibvirt.DomainEventResumedPostcopy:
			return hypervisor.EventResumed, "migrated", true
		}
		return hypervisor.EventResumed, "unpaused", true
	case golibvirt.DomainEventStopped:
		switch golibvirt.DomainEventStoppedDetailType(detail) {
		case golibvirt.DomainEventStoppedShutdown:
			return hypervisor.EventStopped, "shutdown", true
		case golibvirt.DomainEventStoppedDestroyed:
			return hypervisor.EventStopped, "destroyed", true
		case golibvirt.DomainEventStoppedCrashed:
			return hypervisor.EventCrashed, "crashed", true
		case golibvirt.DomainEventStoppedMigrated:
			return hypervisor.EventMigrated, "migrated", true
		case golibvirt.DomainEventStoppedSaved:
			return hypervisor.EventStopped, "saved", true
		case golibvirt.DomainEventStoppedFailed:
			// The qemu process died under libvirt (killed, or crashed).
			return hypervisor.EventCrashed, "qemu-died", true
		case golibvirt.DomainEventStoppedFromSnapshot:
			return hypervisor.EventStopped, "from-snapshot", true
		}
		return hypervisor.EventStopped, "stopped", true
	case golibvirt.DomainEventCrashed:
		if golibvirt.DomainEventCrashedDetailType(detail) == golibvirt.DomainEventCrashedCrashloaded {
			return hypervisor.EventCrashed, "crashloaded", true
		}
		return hypervisor.EventCrashed, "guest panicked", true
	case golibvirt.DomainEventPmsuspended:
		return hypervisor.EventPaused, "pm-suspended", true
	}
	return "", "", false
}

// domainState maps libvirt's (state, reason) pair to Haven's state and a
// short reason.
func domainState(state, reason int32) (hypervisor.State, string) {
	switch golibvirt.DomainState(state) {
	case golibvirt.DomainRunning, golibvirt.DomainBlocked:
		return hypervisor.Running, runningReason(reason)
	case golibvirt.DomainShutdown:
		return hypervisor.Running, "shutting-down"
	case golibvirt.DomainPaused:
		switch golibvirt.DomainPausedReason(reason) {
		case golibvirt.DomainPausedIoerror:
			return hypervisor.Paused, "io-error"
		case golibvirt.DomainPausedMigration, golibvirt.DomainPausedPostcopy:
			return hypervisor.Paused, "migration"
		case golibvirt.DomainPausedUser:
			return hypervisor.Paused, "user"
		case golibvirt.DomainPausedWatchdog:
			return hypervisor.Paused, "watchdog"
		case golibvirt.DomainPausedStartingUp:
			return hypervisor.Paused, "starting-up"
		case golibvirt.DomainPausedCrashed:
			return hypervisor.Crashed, "crashed"
		}
		return hypervisor.Paused, ""
	case golibvirt.DomainPmsuspended:
		return hypervisor.Paused, "pm-suspended"
	case golibvirt.DomainCrashed:
		return hypervisor.Crashed, "panicked"
	case golibvirt.DomainShutoff:
		switch golibvirt.DomainShutoffReason(reason) {
		case golibvirt.DomainShutoffShutdown:
			return hypervisor.Shutoff, "shutdown"
		case golibvirt.DomainShutoffDestroyed:
			return hypervisor.Shutoff, "destroyed"
		case golibvirt.DomainShutoffCrashed, golibvirt.DomainShutoffFailed:
			return hypervisor.Shutoff, "crashed"
		case golibvirt.DomainShutoffMigrated:
			return hypervisor.Shutoff, "migrated"
		case golibvirt.DomainShutoffSaved:
			return hypervisor.Shutoff, "saved"
		case golibvirt.DomainShutoffDaemon:
			return hypervisor.Shutoff, "daemon"
		}
		return hypervisor.Shutoff, ""
	}
	return hypervisor.Shutoff, "no-state"
}

func runningReason(reason int32) string {
	switch golibvirt.DomainRunningReason(reason) {
	case golibvirt.DomainRunningMigrated:
		return "migrated"
	case golibvirt.DomainRunningMigrationCanceled:
		return "migration-canceled"
	case golibvirt.DomainRunningUnpaused:
		return "unpaused"
	case golibvirt.DomainRunningCrashed:
		return "crashed"
	}
	return ""
}

// active reports whether a domain in this state has a running qemu process.
func active(s hypervisor.State) bool {
	return s == hypervisor.Running || s == hypervisor.Paused || s == hypervisor.Incoming || s == hypervisor.Crashed
}

// exitExplained reports whether a libvirt event announces that the guest's
// qemu is about to exit for a known reason (a shutdown, the end of an
// outgoing migration), so that its exit is not a crash.
func exitExplained(event, detail int32) bool {
	switch golibvirt.DomainEventType(event) {
	case golibvirt.DomainEventShutdown, golibvirt.DomainEventStopped:
		return true
	case golibvirt.DomainEventSuspended:
		switch golibvirt.DomainEventSuspendedDetailType(detail) {
		case golibvirt.DomainEventSuspendedMigrated, golibvirt.DomainEventSuspendedPostcopy:
			return true
		}
	}
	return false
}
