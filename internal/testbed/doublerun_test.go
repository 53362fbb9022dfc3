package testbed

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// seq builds observations 100 ms apart from "boot:counter" tokens.
func seq(guest string, tokens ...string) []Observation {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var out []Observation
	for i, tok := range tokens {
		boot, c, _ := strings.Cut(tok, ":")
		var n uint64
		for _, r := range c {
			n = n*10 + uint64(r-'0')
		}
		out = append(out, Observation{Guest: guest, At: t0.Add(time.Duration(i) * 100 * time.Millisecond), Stamp: Stamp{BootID: boot, Counter: n}})
	}
	return out
}

func TestDoubleRunDetector(t *testing.T) {
	tests := []struct {
		name       string
		obs        []Observation
		violations int
		boots      []string // of the first violation
		segments   int      // for guest g
	}{
		{"one boot counting", seq("g", "A:1", "A:2", "A:2", "A:3", "A:5"), 0, nil, 1},
		{"live migration keeps boot and counter", seq("g", "A:1", "A:2", "A:3", "A:4"), 0, nil, 1},
		{"restart elsewhere: new boot", seq("g", "A:1", "A:2", "B:0", "B:1", "B:2"), 0, nil, 2},
		{"two restarts", seq("g", "A:1", "B:0", "C:0", "C:1"), 0, nil, 3},
		{"interleaved: A, B, then A advances", seq("g", "A:1", "A:2", "B:0", "A:3", "B:1", "C:0", "A:4"), 2, []string{"A", "B"}, 6},
		{"old writer's stamp reappears unchanged", seq("g", "A:7", "B:0", "A:7"), 1, []string{"A", "B"}, 3},
		{"both advancing alternately: reported once per pair", seq("g", "A:1", "B:1", "A:2", "B:2", "A:3", "B:3"), 1, []string{"A", "B"}, 6},
		{"same boot twice: counter goes back", seq("g", "A:10", "A:11", "A:10", "A:12"), 1, []string{"A", "A"}, 1},
		{"other guests do not mix", append(seq("g", "A:1", "A:2"), seq("h", "B:1", "A:1")...), 0, nil, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := NewDoubleRunDetector()
			for _, o := range tt.obs {
				d.Observe(o)
			}
			vs := d.Violations()
			if len(vs) != tt.violations {
				t.Fatalf("violations = %v, want %d", vs, tt.violations)
			}
			if len(vs) > 0 && strings.Join(vs[0].BootIDs, ",") != strings.Join(tt.boots, ",") {
				t.Errorf("first violation's boots = %v, want %v", vs[0].BootIDs, tt.boots)
			}
			if got := len(d.Segments("g")); got != tt.segments {
				t.Errorf("segments = %d (%+v), want %d", got, d.Segments("g"), tt.segments)
			}
			if got := len(CheckObservations(tt.obs)); got != tt.violations {
				t.Errorf("CheckObservations found %d", got)
			}
		})
	}
}

func TestDoubleRunSegmentsMeasureOutage(t *testing.T) {
	d := NewDoubleRunDetector()
	// A's stamp stays on the disk after A died: seen, but not moving.
	for _, o := range seq("g", "A:1", "A:2", "A:3", "A:3", "A:3", "B:0", "B:1") {
		d.Observe(o)
	}
	s := d.Segments("g")
	if len(s) != 2 || s[0].LastCounter != 3 || s[1].FirstCounter != 0 {
		t.Fatalf("segments %+v", s)
	}
	if gap := s[1].First.Sub(s[0].Last); gap != 300*time.Millisecond {
		t.Errorf("gap %v", gap)
	}
}

func TestParseStamp(t *testing.T) {
	tests := []struct {
		in   string
		want Stamp
		err  bool
	}{
		{"HAVEN 3f2a-99 42\n", Stamp{"3f2a-99", 42}, false},
		{"HAVEN b 0\n\x00\x00garbage", Stamp{"b", 0}, false},
		{"HAVEN b 1", Stamp{}, true},
		{"HAVEN  1\n", Stamp{}, true},
		{"HAVEN b -1\n", Stamp{}, true},
		{"HAVEN b 1 2\n", Stamp{}, true},
		{"haven b 1\n", Stamp{}, true},
		{"HAVEN b\x01c 1\n", Stamp{}, true},
		{"HAVEN b 99999999999999999999999\n", Stamp{}, true},
	}
	for _, tt := range tests {
		got, err := ParseStamp([]byte(tt.in))
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("ParseStamp(%q) = %+v, %v", tt.in, got, err)
		}
	}
	if _, err := ParseStamp(make([]byte, 512)); !errors.Is(err, ErrNoStamp) {
		t.Errorf("zeroed disk: %v, want ErrNoStamp", err)
	}
	if s, err := ParseStamp(FormatStamp(Stamp{"x", 9})); err != nil || s != (Stamp{"x", 9}) {
		t.Errorf("FormatStamp round trip: %+v, %v", s, err)
	}
}

func FuzzParseStamp(f *testing.F) {
	f.Add([]byte("HAVEN 3f2a 42\n"))
	f.Add([]byte("HAVEN a 1"))
	f.Add(make([]byte, 600))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseStamp(data)
		if err != nil {
			return
		}
		again, err := ParseStamp(FormatStamp(s))
		if err != nil || again != s {
			t.Fatalf("%q parsed to %+v, which does not round-trip: %+v %v", data, s, again, err)
		}
	})
}

// writeStamp overwrites the stamp area in place, as a guest does.
func writeStamp(t *testing.T, path string, s Stamp) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		t.Error(err)
		return
	}
	defer f.Close()
	if _, err := f.WriteAt(FormatStamp(s), 0); err != nil {
		t.Error(err)
	}
}

func TestDoubleRunCheckerPollsFiles(t *testing.T) {
	dir := t.TempDir()
	disk := filepath.Join(dir, "web1.img")
	c := NewDoubleRunChecker()
	c.Watch("web1", disk)
	c.PollOnce() // missing file: nothing yet
	if err := os.WriteFile(disk, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	c.PollOnce() // zeroed disk: nothing yet
	for i := uint64(1); i <= 3; i++ {
		writeStamp(t, disk, Stamp{"A", i})
		c.PollOnce()
	}
	writeStamp(t, disk, Stamp{"B", 1}) // restart elsewhere
	c.PollOnce()
	if err := c.Err(); err != nil {
		t.Fatalf("a clean restart is reported: %v", err)
	}
	if s := c.Segments("web1"); len(s) != 2 || s[0].LastCounter != 3 {
		t.Fatalf("segments %+v", s)
	}
	os.WriteFile(disk, []byte("HAVEN torn"), 0o644)
	c.PollOnce()
	if n, err := c.BadReads("web1"); n != 1 || err == nil {
		t.Errorf("bad reads = %d, %v", n, err)
	}
	var seen []Violation
	c.OnViolation = func(v Violation) { seen = append(seen, v) }
	writeStamp(t, disk, Stamp{"A", 4}) // the old writer is still alive
	c.PollOnce()
	if len(seen) != 1 || c.Err() == nil {
		t.Fatalf("interleaving not reported: %v", seen)
	}
}

// Two goroutines standing in for two copies of a guest write the same disk
// every 2 ms while the checker polls every 1 ms.
func TestDoubleRunCheckerCatchesConcurrentWriters(t *testing.T) {
	disk := filepath.Join(t.TempDir(), "db1.img")
	c := NewDoubleRunChecker()
	c.Interval = time.Millisecond
	c.Watch("db1", disk)
	stop := c.Start(context.Background())

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	writer := func(boot string) {
		defer wg.Done()
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for n := uint64(0); ; n++ {
			writeStamp(t, disk, Stamp{boot, n})
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}
	wg.Add(1)
	go writer("A")
	// First one writer alone: no violation while it counts.
	deadline := time.Now().Add(10 * time.Second)
	for s := c.Segments("db1"); len(s) == 0 || s[0].LastCounter < 20; s = c.Segments("db1") {
		if time.Now().After(deadline) {
			t.Fatal("checker does not see writer A")
		}
		time.Sleep(time.Millisecond)
	}
	if err := c.Err(); err != nil {
		t.Fatalf("one writer reported: %v", err)
	}
	wg.Add(1)
	go writer("B")
	for c.Err() == nil {
		if time.Now().After(deadline) {
			t.Fatal("two concurrent writers not reported")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	wg.Wait()
	vs := stop()
	if len(vs) == 0 || vs[0].Guest != "db1" {
		t.Errorf("violations %v", vs)
	}
}
