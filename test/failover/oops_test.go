package failover

import "testing"

// TestKernelFailure: the guest console lines that mark a guest kernel
// failing on its own, and none in a healthy boot's.
func TestKernelFailure(t *testing.T) {
	healthy := "HAVEN-READY 391e89c5\nHAVEN-COUNT 391e89c5 10\n[    3.188927] clocksource: Switched to clocksource tsc\n"
	if got := kernelFailure([]byte(healthy)); got != "" {
		t.Errorf("healthy console taken for a failure: %q", got)
	}
	for _, line := range []string{
		"[   41.2] list_del corruption. prev->next should be ffff8880036c2a48, but was 0000000000000000",
		"[   41.2] kernel BUG at lib/list_debug.c:62!",
		"[   41.2] Kernel panic - not syncing: Fatal exception",
		"[   41.2] BUG: unable to handle page fault for address: 0000000000001000",
	} {
		if got := kernelFailure([]byte(healthy + line + "\nHAVEN-READY 3f8be1e6\n")); got == "" {
			t.Errorf("missed %q", line)
		}
	}
}
