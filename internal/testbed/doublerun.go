package testbed

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The double-run checker watches test guests for the one thing Haven must
// never allow: a guest running on two hosts at once. Each test guest's first
// disk is a file in the shared directory, and the guest overwrites the disk's
// first 512 bytes every 100 ms with a stamp "HAVEN <bootid> <counter>\n": a
// boot id drawn at each boot and a counter that goes up by one per write. A
// live migration keeps the boot id and the counter carries on; a restart
// (elsewhere or not) draws a new boot id. Two copies of a guest writing the
// same disk show as interleaved stamps: boot A, then B, then A again, or one
// boot's counter going back.
//
// DoubleRunDetector is the pure logic over observations; DoubleRunChecker
// polls the disk files and feeds it.

// StampSize is the size of the stamp area at the start of a guest's disk.
const StampSize = 512

// Stamp is what a test guest writes at the start of its first disk.
type Stamp struct {
	BootID  string
	Counter uint64
}

func (s Stamp) String() string { return fmt.Sprintf("HAVEN %s %d", s.BootID, s.Counter) }

// ErrNoStamp means the disk holds no stamp yet (zeros: the guest has not
// written since the disk was made).
var ErrNoStamp = errors.New("no stamp written yet")

// ParseStamp parses the start of a guest's disk: "HAVEN <bootid> <counter>\n"
// (what follows the newline is ignored). A disk that starts with a zero byte
// gives ErrNoStamp.
func ParseStamp(data []byte) (Stamp, error) {
	if len(data) > StampSize {
		data = data[:StampSize]
	}
	if len(data) == 0 || data[0] == 0 {
		return Stamp{}, ErrNoStamp
	}
	line, _, ok := bytes.Cut(data, []byte{'\n'})
	if !ok {
		return Stamp{}, fmt.Errorf("stamp %.40q has no newline", data)
	}
	f := strings.Split(string(line), " ")
	if len(f) != 3 || f[0] != "HAVEN" {
		return Stamp{}, fmt.Errorf("stamp %.60q is not \"HAVEN <bootid> <counter>\"", line)
	}
	if f[1] == "" || len(f[1]) > 128 || strings.ContainsFunc(f[1], func(r rune) bool { return r <= ' ' || r > '~' }) {
		return Stamp{}, fmt.Errorf("stamp %.60q has a bad boot id", line)
	}
	n, err := strconv.ParseUint(f[2], 10, 64)
	if err != nil {
		return Stamp{}, fmt.Errorf("stamp %.60q has a bad counter: %w", line, err)
	}
	return Stamp{BootID: f[1], Counter: n}, nil
}

// FormatStamp returns the 512-byte stamp area a test guest writes, zero
// padded (for tests that stand in for guests).
func FormatStamp(s Stamp) []byte {
	b := make([]byte, StampSize)
	copy(b, s.String()+"\n")
	return b
}

// Observation is one read of a guest's stamp.
type Observation struct {
	Guest string
	At    time.Time
	Stamp Stamp
}

// Segment is a stretch of a guest's disk history written by one boot: the
// writer's boot id, when its stamp was first seen and when its counter was
// last seen to move (a dead writer's stamp stays on the disk and does not
// move), and its counters then. A guest that ran once, was fenced and
// restarted elsewhere has two segments; the gap from one's Last to the
// next one's First is the guest's outage as its disk saw it (to within two
// poll intervals plus one write interval).
type Segment struct {
	BootID                    string
	First, Last               time.Time
	FirstCounter, LastCounter uint64
}

// Violation is evidence of two writers on one guest's disk.
type Violation struct {
	Guest string
	At    time.Time
	// BootIDs are the writers involved: two different boots, or one boot
	// twice (a counter that went back: two copies of the same boot).
	BootIDs []string
	Reason  string
}

func (v Violation) String() string {
	return fmt.Sprintf("guest %q ran twice at %s: %s", v.Guest, v.At.Format("15:04:05.000"), v.Reason)
}

// DoubleRunDetector keeps each guest's stamp history and reports
// violations. It does no I/O and reads no clock: observations carry their
// time. It is not safe for concurrent use.
type DoubleRunDetector struct {
	guests     map[string]*guestHistory
	violations []Violation
}

type guestHistory struct {
	segments []Segment
	last     map[string]uint64 // highest counter seen per boot id
	reported map[string]bool   // violation keys already reported
}

// NewDoubleRunDetector returns an empty detector.
func NewDoubleRunDetector() *DoubleRunDetector {
	return &DoubleRunDetector{guests: map[string]*guestHistory{}}
}

// Observe takes one observation, in time order per guest, and returns the
// violations it reveals (each kind of violation between the same writers is
// reported once).
func (d *DoubleRunDetector) Observe(o Observation) []Violation {
	g := d.guests[o.Guest]
	if g == nil {
		g = &guestHistory{last: map[string]uint64{}, reported: map[string]bool{}}
		d.guests[o.Guest] = g
	}
	var found []Violation
	report := func(key, reason string, boots ...string) {
		if g.reported[key] {
			return
		}
		g.reported[key] = true
		v := Violation{Guest: o.Guest, At: o.At, BootIDs: boots, Reason: reason}
		found = append(found, v)
		d.violations = append(d.violations, v)
	}
	s := o.Stamp
	n := len(g.segments)
	if n > 0 && g.segments[n-1].BootID == s.BootID {
		cur := &g.segments[n-1]
		if s.Counter < cur.LastCounter {
			report("back "+s.BootID, fmt.Sprintf("counter of boot %s went back from %d to %d: two copies of the same boot write the disk (a migration whose source kept running?)", s.BootID, cur.LastCounter, s.Counter), s.BootID, s.BootID)
		}
		if s.Counter != cur.LastCounter {
			cur.Last = o.At
		}
		cur.LastCounter = s.Counter
		g.last[s.BootID] = max(g.last[s.BootID], s.Counter)
		return found
	}
	if prev, seen := g.last[s.BootID]; seen {
		other := g.segments[n-1].BootID
		pair := []string{s.BootID, other}
		slices.Sort(pair)
		report("again "+strings.Join(pair, " "), fmt.Sprintf("boot %s wrote again (counter %d, last seen %d) after boot %s had taken over the disk: both run", s.BootID, s.Counter, prev, other), s.BootID, other)
	}
	g.segments = append(g.segments, Segment{BootID: s.BootID, First: o.At, Last: o.At, FirstCounter: s.Counter, LastCounter: s.Counter})
	g.last[s.BootID] = max(g.last[s.BootID], s.Counter)
	return found
}

// Segments returns a guest's history, one segment per change of writer.
func (d *DoubleRunDetector) Segments(guest string) []Segment {
	if g := d.guests[guest]; g != nil {
		return slices.Clone(g.segments)
	}
	return nil
}

// Violations returns every violation found so far.
func (d *DoubleRunDetector) Violations() []Violation { return slices.Clone(d.violations) }

// CheckObservations runs a detector over a sequence of observations and
// returns the violations.
func CheckObservations(obs []Observation) []Violation {
	d := NewDoubleRunDetector()
	for _, o := range obs {
		d.Observe(o)
	}
	return d.Violations()
}

// DoubleRunChecker polls guests' disk files and reports double runs. Set
// its fields before Run; Watch and the readers are safe for concurrent use.
type DoubleRunChecker struct {
	// Interval between polls (default 50 ms).
	Interval time.Duration
	// Now is the clock stamping observations (default time.Now).
	Now func() time.Time
	// OnViolation, when set, is called for each violation as it is found.
	OnViolation func(Violation)

	mu       sync.Mutex // guards the fields below
	det      *DoubleRunDetector
	files    map[string]string // guest -> disk file
	badReads map[string]int
	lastErr  map[string]error
}

// NewDoubleRunChecker returns a checker watching no guest yet.
func NewDoubleRunChecker() *DoubleRunChecker {
	return &DoubleRunChecker{det: NewDoubleRunDetector(), files: map[string]string{}, badReads: map[string]int{}, lastErr: map[string]error{}}
}

// Watch starts watching a guest's first disk (a file on the shared dir).
// A missing or still zeroed file is fine: the guest has not started.
func (c *DoubleRunChecker) Watch(guest, diskPath string) {
	c.mu.Lock()
	c.files[guest] = diskPath
	c.mu.Unlock()
}

// Unwatch stops watching a guest; its history stays.
func (c *DoubleRunChecker) Unwatch(guest string) {
	c.mu.Lock()
	delete(c.files, guest)
	c.mu.Unlock()
}

// Run polls every Interval until ctx ends.
func (c *DoubleRunChecker) Run(ctx context.Context) {
	iv := c.Interval
	if iv <= 0 {
		iv = 50 * time.Millisecond
	}
	t := time.NewTicker(iv)
	defer t.Stop()
	for {
		c.PollOnce()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Start runs the checker in a goroutine and returns a function that stops
// it and returns the violations found.
func (c *DoubleRunChecker) Start(ctx context.Context) (stop func() []Violation) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	return func() []Violation {
		cancel()
		<-done
		c.PollOnce()
		return c.Violations()
	}
}

// PollOnce reads every watched disk once.
func (c *DoubleRunChecker) PollOnce() {
	c.mu.Lock()
	files := make(map[string]string, len(c.files))
	for g, p := range c.files {
		files[g] = p
	}
	c.mu.Unlock()
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	for guest, path := range files {
		s, err := readStamp(path)
		at := now()
		c.mu.Lock()
		var found []Violation
		switch {
		case err == nil:
			found = c.det.Observe(Observation{Guest: guest, At: at, Stamp: s})
		case errors.Is(err, ErrNoStamp), errors.Is(err, os.ErrNotExist):
		default:
			// A torn read or a corrupt disk: counted, never a verdict.
			c.badReads[guest]++
			c.lastErr[guest] = err
		}
		c.mu.Unlock()
		for _, v := range found {
			if c.OnViolation != nil {
				c.OnViolation(v)
			}
		}
	}
}

// readStamp reads a disk's stamp area until two reads in a row agree, so a
// read that raced a write (half old stamp, half new) is never taken for a
// stamp: that could fake a counter going back or a boot id nobody wrote.
func readStamp(path string) (Stamp, error) {
	f, err := os.Open(path)
	if err != nil {
		return Stamp{}, err
	}
	defer f.Close()
	var prev []byte
	for range 4 {
		buf := make([]byte, StampSize)
		n, err := f.ReadAt(buf, 0)
		if err != nil && !errors.Is(err, io.EOF) {
			return Stamp{}, err
		}
		buf = buf[:n]
		if prev != nil && bytes.Equal(prev, buf) {
			return ParseStamp(buf)
		}
		prev = buf
	}
	return Stamp{}, errTorn
}

var errTorn = errors.New("stamp kept changing while read (torn reads)")

// Violations returns every violation found so far.
func (c *DoubleRunChecker) Violations() []Violation {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.det.Violations()
}

// Segments returns a guest's history so far.
func (c *DoubleRunChecker) Segments(guest string) []Segment {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.det.Segments(guest)
}

// BadReads returns how many reads of a guest's disk did not parse, and the
// last such error.
func (c *DoubleRunChecker) BadReads(guest string) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.badReads[guest], c.lastErr[guest]
}

// Err returns nil, or an error listing every violation found so far.
func (c *DoubleRunChecker) Err() error {
	vs := c.Violations()
	if len(vs) == 0 {
		return nil
	}
	lines := make([]string, len(vs))
	for i, v := range vs {
		lines[i] = v.String()
	}
	return fmt.Errorf("double run detected:\n%s", strings.Join(lines, "\n"))
}
