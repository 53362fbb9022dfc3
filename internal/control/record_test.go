package control

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/haven-ha/haven/internal/hostctl"
	"github.com/haven-ha/haven/internal/manager"
)

// lockedBuffer is a bytes.Buffer safe for the shell's goroutine and the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// A term recorded in the daemon's shell replays through the same core and
// shell with the same decisions: a start, a crash and its restart after
// the delay (a timer), a two-phase live migration and a host failure with
// its fence.
func TestRecordReplay(t *testing.T) {
	st := vm1OnN1(t, manager.Config{}, "n1", "n2")
	buf := &lockedBuffer{}
	rec := NewRecorder(buf)
	w := newMemWriter()
	sh := New(Config{State: st, Writer: w, Fencer: noFence{}, Defs: defs{}, Record: rec.Record})
	ctx, cancel := context.WithCancel(context.Background())
	in := make(chan Input)
	errc := make(chan error, 1)
	go func() {
		errc <- sh.Run(ctx, manager.Sync{Nodes: []manager.NodeReport{{Name: "n1", BootID: "a"}, {Name: "n2", BootID: "b"}}}, in)
	}()
	wait := func(what string, cond func() bool) { t.Helper(); w.wait(t, what, cond) }
	startVM1(t, w, in)
	in <- Input{Report: &NodeReport{Node: "n1", Report: hostctl.Report{Guest: "vm1", State: hostctl.Crashed, Reason: "qemu exited"}}}
	wait("restart order on n1", func() bool { o := w.order("n1", "vm1"); return o.Op == hostctl.OpStart && o.ID != "1" })
	o := w.order("n1", "vm1")
	in <- Input{Report: &NodeReport{Node: "n1", Report: hostctl.Report{Guest: "vm1", State: hostctl.Running, OrderID: o.ID, Op: hostctl.OpStart, Result: hostctl.ResultOK}}}
	mig := migrateVM1ToN2(t, w, in, "tcp:10.0.0.2:1")
	in <- Input{Report: &NodeReport{Node: "n1", Report: hostctl.Report{Guest: "vm1", State: hostctl.Stopped, OrderID: mig.ID, Op: hostctl.OpMigrate, Result: hostctl.ResultOK}}}
	in <- Input{NodeGone: "n2"}
	wait("vm1 back on n1 after n2's fence", func() bool { o := w.order("n1", "vm1"); return o.Op == hostctl.OpStart && o.ID != mig.ID })
	in <- Input{Config: &Change{}}
	cancel()
	<-errc
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
	recording := buf.b.String()

	var out bytes.Buffer
	res, err := Replay(context.Background(), strings.NewReader(recording), &out)
	if err != nil {
		t.Fatalf("replay: %v\n%s", err, out.String())
	}
	if res.Diverged != 0 || res.Decisions < 8 {
		t.Fatalf("replay: %+v\n%s", res, out.String())
	}
	for _, want := range []string{"fence result n2", "tick", "order receive vm1 on n2", "order migrate vm1 on n1", "order start vm1 on n1"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("replay output lacks %q:\n%s", want, out.String())
		}
	}

	// A recording whose decisions differ from what the core decides now
	// is reported, not silently accepted.
	tampered := strings.Replace(recording, `"actions":["start vm1 on n1`, `"actions":["start vm1 on n2`, 1)
	if tampered == recording {
		t.Fatalf("no start action to tamper with in:\n%s", recording)
	}
	res, err = Replay(context.Background(), strings.NewReader(tampered), &out)
	if err != nil || res.Diverged == 0 {
		t.Fatalf("tampered replay: %+v, %v", res, err)
	}
	if _, err := Replay(context.Background(), strings.NewReader(`{"at":"2026-01-01T00:00:00Z","tick":true}`+"\n"), &out); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("a recording without its first line: %v", err)
	}
}
