// Package prio sets the agent's CPU scheduling priority (its nice value).
//
// An HA agent that cannot run in time takes its host down: a lease not
// renewed within its TTL makes the host self-fence, and the embedded store
// member misses its heartbeats. corosync runs with a real-time priority
// for the same reason. Haven uses a raised nice value instead (the default
// -10 gives the agent about ten times the CPU share of a normal process
// under contention), which cannot starve the host: a busy manager at
// nice -10 still leaves the guests CPU. Guests started by the agent run at
// nice 0 again (Current tells the QEMU driver how much to undo).
//
// On Linux a nice value belongs to each thread, and a new thread inherits
// its creator's: Set changes every thread the process has, twice, so that
// a thread created meanwhile is caught too; later threads inherit it.
package prio

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
)

// Set gives every thread of this process nice value n (-20 to 19). Lowering
// it needs root (CAP_SYS_NICE).
func Set(n int) error {
	if n < -20 || n > 19 {
		return fmt.Errorf("nice value %d out of range -20..19", n)
	}
	for pass := 0; pass < 2; pass++ {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return fmt.Errorf("set nice %d: %w", n, err)
		}
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil {
				continue
			}
			if err := syscall.Setpriority(syscall.PRIO_PROCESS, tid, n); err != nil && !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("set nice %d: %w", n, err)
			}
		}
	}
	return nil
}

// Current is the calling thread's nice value (the process's, once Set).
func Current() int {
	p, err := syscall.Getpriority(syscall.PRIO_PROCESS, 0)
	if err != nil {
		return 0
	}
	// The system call returns 20 - nice (1..40), unlike getpriority(3).
	return 20 - p
}
