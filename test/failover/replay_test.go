package failover

import (
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReplayTestBedRecording records the manager's term on the test bed
// (haven agent --record) through a host's power loss, ends the term (the
// manager's agent stops), and replays the recording with `haven sim
// replay`: every decision of the real term, the fence and the restart
// included, must come out the same (docs/daemon.md, "Recording and
// replaying a term"). The QEMU driver only: the recording holds the
// manager's inputs, which do not depend on the driver.
func TestReplayTestBedRecording(t *testing.T) {
	c := newCluster(t, options{record: true})
	st, err := c.status()
	if err != nil {
		t.Fatal(err)
	}
	mgr := st.Manager
	if mgr == "" {
		t.Fatal("no manager after the cluster came up")
	}
	var victim, other string
	for _, n := range c.names() {
		switch {
		case n == mgr:
		case victim == "":
			victim = n
		default:
			other = n
		}
	}
	c.domain("victim-first", victim, other, mgr)
	c.guest("g1", "victim-first", "")
	c.waitRunning(120*time.Second, func(_, n string) bool { return n == victim }, "g1")

	t0 := time.Now()
	if err := c.bed.PowerOff(c.ctx, victim); err != nil {
		t.Fatal(err)
	}
	c.waitRunning(recoverWithin, func(_, n string) bool { return n != victim }, "g1")
	t.Logf("g1 runs again %v after %s lost power", time.Since(t0).Round(100*time.Millisecond), victim)
	c.noDoubleRun()

	// The term ends with its agent: the recording is complete.
	m := c.node(mgr)
	c.stopAgent(m, syscall.SIGTERM)
	files, err := filepath.Glob(filepath.Join(m.recordDir(), "term-*-"+mgr+".jsonl"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no recording of %s's term in %s (%v)", mgr, m.recordDir(), err)
	}
	summary := regexp.MustCompile(`(\d+) inputs, (\d+) decisions compared, (\d+) differ`)
	fenced := false
	for _, f := range files {
		out := c.haven("sim", "replay", f) // fails the test on a non-zero exit (a decision differs)
		m := summary.FindStringSubmatch(out)
		if m == nil {
			t.Errorf("haven sim replay %s printed no summary:\n%s", f, tail(out, 40))
			continue
		}
		decisions, _ := strconv.Atoi(m[2])
		if m[3] != "0" || decisions == 0 {
			t.Errorf("haven sim replay %s: %s\n%s", f, m[0], tail(out, 40))
		}
		t.Logf("%s: %s", filepath.Base(f), m[0])
		// The power loss is in the recording: the replay fenced the
		// victim and restarted g1, as the real term did.
		for _, line := range strings.Split(out, "\n") {
			l := strings.TrimSpace(line)
			if strings.HasPrefix(l, "fence "+victim) {
				fenced = true
			}
		}
	}
	if !fenced {
		t.Errorf("no replayed recording of %s fenced %s (its power loss is not in the recordings %v)", mgr, victim, files)
	}
	if err := c.startAgent(m, nil); err != nil {
		t.Fatal(err)
	}
	c.waitReady(m, 60*time.Second)
}
