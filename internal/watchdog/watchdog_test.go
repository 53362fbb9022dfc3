package watchdog

// DANGER: no test here may open the machine's real watchdog (/dev/watchdog*):
// opening it arms it and the machine resets. Every opener used in tests goes
// through guardOpener, which fails the test for any path under /dev.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func notDev(t *testing.T, path string) {
	t.Helper()
	if abs, _ := filepath.Abs(path); strings.HasPrefix(abs, "/dev/") || path == "" {
		t.Fatalf("test tried to open %q: tests must never touch a real watchdog", path)
	}
}

// fakeDevice records what is done to it.
type fakeDevice struct {
	mu         sync.Mutex
	timeout    int
	round      int // if set, SetTimeout sets this instead
	keepalives int
	disarmed   bool
	closed     bool
	failDisarm bool
	failKeep   bool
}

func (d *fakeDevice) SetTimeout(s int) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.timeout = s
	if d.round != 0 {
		d.timeout = d.round
	}
	return d.timeout, nil
}

func (d *fakeDevice) Timeout() (int, error) { d.mu.Lock(); defer d.mu.Unlock(); return d.timeout, nil }

func (d *fakeDevice) Keepalive() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.failKeep {
		return errors.New("keepalive: EIO")
	}
	d.keepalives++
	return nil
}

func (d *fakeDevice) Disarm() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.failDisarm {
		return errors.New("write: EIO")
	}
	d.disarmed, d.closed = true, true
	return nil
}

func (d *fakeDevice) Close() error { d.mu.Lock(); defer d.mu.Unlock(); d.closed = true; return nil }

func (d *fakeDevice) pets() int { d.mu.Lock(); defer d.mu.Unlock(); return d.keepalives }

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time            { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) set(t time.Time)           { c.mu.Lock(); defer c.mu.Unlock(); c.t = t }
func (c *clock) advance(d time.Duration)   { c.mu.Lock(); defer c.mu.Unlock(); c.t = c.t.Add(d) }
func (c *clock) ago(d time.Duration) Proof { return Proof{KeepaliveSent: c.now().Add(-d)} }
func newClock() *clock                     { return &clock{t: time.Unix(1_800_000_000, 0)} }
func quiet() *slog.Logger                  { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
func guardOpener(t *testing.T, d Device) Opener {
	return func(path string) (Device, error) { notDev(t, path); return d, nil }
}

func newWatchdog(t *testing.T, dev *fakeDevice, c *clock) *Watchdog {
	t.Helper()
	w, err := New(Config{Path: filepath.Join(t.TempDir(), "watchdog"), Timeout: 5 * time.Second, MaxProofAge: time.Second}, guardOpener(t, dev), c.now, quiet())
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestArmPetDisarm(t *testing.T) {
	c, dev := newClock(), &fakeDevice{}
	w := newWatchdog(t, dev, c)
	if err := w.Pet(c.ago(0)); !errors.Is(err, ErrNotArmed) {
		t.Errorf("Pet before Arm = %v, want ErrNotArmed", err)
	}
	if err := w.Arm(c.ago(2 * time.Second)); !errors.Is(err, ErrStaleProof) || w.Armed() {
		t.Fatalf("Arm with a stale proof = %v (armed %v), want ErrStaleProof and not armed", err, w.Armed())
	}
	if err := w.Arm(c.ago(100 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if !w.Armed() || dev.timeout != 5 || dev.pets() != 1 || !w.LastPet().Equal(c.now()) {
		t.Fatalf("after Arm: armed %v timeout %d pets %d", w.Armed(), dev.timeout, dev.pets())
	}
	c.advance(time.Second)
	if err := w.Pet(c.ago(10 * time.Millisecond)); err != nil || dev.pets() != 2 || !w.LastPet().Equal(c.now()) {
		t.Errorf("Pet = %v, pets %d", err, dev.pets())
	}
	tests := []struct {
		name  string
		proof Proof
		want  string
	}{
		{"stale", c.ago(1001 * time.Millisecond), "too old"},
		{"zero", Proof{}, "no lease confirmation"},
		{"future", c.ago(-time.Second), "in the future"},
	}
	for _, tt := range tests {
		err := w.Pet(tt.proof)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Pet(%s) = %v, want %q", tt.name, err, tt.want)
		}
	}
	if dev.pets() != 2 {
		t.Errorf("refused pets reached the device: %d keepalives, want 2", dev.pets())
	}
	if err := w.Pet(c.ago(time.Second)); err != nil {
		t.Errorf("Pet with a proof exactly MaxProofAge old = %v", err)
	}
	if err := w.Arm(c.ago(0)); err != nil || dev.pets() != 4 {
		t.Errorf("Arm when armed = %v, pets %d; want a pet", err, dev.pets())
	}
	if err := w.Disarm(); err != nil || w.Armed() || !dev.disarmed {
		t.Errorf("Disarm = %v, armed %v, magic close %v", err, w.Armed(), dev.disarmed)
	}
	if err := w.Disarm(); err != nil {
		t.Errorf("second Disarm = %v", err)
	}
}

func TestDisarmFailureKeepsArmed(t *testing.T) {
	c, dev := newClock(), &fakeDevice{failDisarm: true}
	w := newWatchdog(t, dev, c)
	if err := w.Arm(c.ago(0)); err != nil {
		t.Fatal(err)
	}
	if err := w.Disarm(); err == nil || !w.Armed() {
		t.Fatalf("Disarm = %v, armed %v; want an error and still armed", err, w.Armed())
	}
	if err := w.Pet(c.ago(0)); err != nil {
		t.Errorf("Pet after a failed Disarm = %v; the caller must still be able to keep the node alive", err)
	}
}

func TestArmRefusesRoundedTimeout(t *testing.T) {
	c, dev := newClock(), &fakeDevice{round: 8}
	w := newWatchdog(t, dev, c)
	err := w.Arm(c.ago(0))
	if err == nil || !strings.Contains(err.Error(), "timeout 8s instead of 5s") {
		t.Fatalf("Arm = %v, want refusal of the driver's 8s", err)
	}
	if w.Armed() || !dev.disarmed {
		t.Errorf("after refusal: armed %v, magic close %v; want disarmed", w.Armed(), dev.disarmed)
	}
}

func TestArmKeepaliveFailureLeavesArmedWhenDisarmFails(t *testing.T) {
	c, dev := newClock(), &fakeDevice{failKeep: true, failDisarm: true}
	w := newWatchdog(t, dev, c)
	if err := w.Arm(c.ago(0)); err == nil {
		t.Fatal("Arm succeeded with a failing keepalive")
	}
	if !w.Armed() {
		t.Error("a watchdog that could not be disarmed is reported disarmed")
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{Timeout: 0, MaxProofAge: time.Second},
		{Timeout: 1500 * time.Millisecond, MaxProofAge: time.Second},
		{Timeout: 5 * time.Second},
	} {
		if _, err := New(cfg, guardOpener(t, &fakeDevice{}), time.Now, nil); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
}

// good is a valid timing: lease 5s renewed every second, watchdog 4s, guests
// killed 3s after the last confirmation, manager waits 5.1s.
var good = Timing{LeaseTTL: 5 * time.Second, KeepaliveInterval: time.Second, WatchdogTimeout: 4 * time.Second, StopGuestsDeadline: 3 * time.Second, ManagerWait: 5100 * time.Millisecond}

func with(f func(*Timing)) Timing { t := good; f(&t); return t }

func TestTimingValidate(t *testing.T) {
	tests := []struct {
		name string
		t    Timing
		want []string // all must appear in the error; none means valid
	}{
		{name: "good", t: good},
		{name: "fast profile in docs/fencing.md", t: Timing{LeaseTTL: 3 * time.Second, KeepaliveInterval: time.Second, WatchdogTimeout: 2 * time.Second, StopGuestsDeadline: 2 * time.Second, ManagerWait: 3100 * time.Millisecond}},
		{name: "exactly the minimum wait", t: with(func(t *Timing) { t.ManagerWait = t.MinManagerWait() })},
		{name: "zero lease", t: with(func(t *Timing) { t.LeaseTTL = 0 }), want: []string{"lease TTL is 0s"}},
		{name: "negative wait", t: with(func(t *Timing) { t.ManagerWait = -time.Second }), want: []string{"manager wait is -1s"}},
		{name: "negative slack", t: with(func(t *Timing) { t.FireSlack = -1 }), want: []string{"fire slack"}},
		{name: "fractional watchdog", t: with(func(t *Timing) { t.WatchdogTimeout = 4500 * time.Millisecond; t.ManagerWait = 10 * time.Second }),
			want: []string{"not a whole number of seconds"}},
		{name: "keepalive too slow", t: with(func(t *Timing) {
			t.KeepaliveInterval = 3 * time.Second
			t.WatchdogTimeout = 6 * time.Second
			t.StopGuestsDeadline = 6 * time.Second
			t.ManagerWait = 8 * time.Second
		}),
			want: []string{"lower the keepalive interval to at most 2.5s or raise the lease TTL to at least 6s"}},
		{name: "watchdog shorter than two keepalives", t: with(func(t *Timing) { t.WatchdogTimeout = time.Second }),
			want: []string{"raise the watchdog timeout to at least 2s"}},
		{name: "guests killed at one hiccup", t: with(func(t *Timing) { t.StopGuestsDeadline = 1500 * time.Millisecond }),
			want: []string{"stop-guests deadline 1.5s is less than two keepalive intervals"}},
		// keepalive 1s + watchdog 4s, stretched twice (5.1005s), + 1.01s
		// slack - 5s TTL = 1.1105s.
		{name: "wait shorter than watchdog", t: with(func(t *Timing) { t.ManagerWait = time.Second }),
			want: []string{"manager wait 1s is too short", "raise the manager wait to at least 1.1105s", "lower the watchdog timeout to 3s"}},
		{name: "wait far shorter than watchdog", t: with(func(t *Timing) { t.ManagerWait = 10 * time.Millisecond }),
			want: []string{"raise the manager wait to at least 1.1105s", "lower the watchdog timeout to 2s"}},
		// 6.5s stretched twice (6.63065s) + 1.01s - 5s = 2.64065s.
		{name: "wait shorter than stop-guests deadline", t: with(func(t *Timing) { t.StopGuestsDeadline = 6500 * time.Millisecond; t.ManagerWait = 2 * time.Second }),
			want: []string{"raise the manager wait to at least 2.64065s", "lower the stop-guests deadline to 5.871s"}},
		{name: "slack counts", t: with(func(t *Timing) { t.FireSlack = 2 * time.Second; t.ManagerWait = 2 * time.Second }),
			want: []string{"raise the manager wait to at least 2.1205s"}},
		{name: "wait covers a big slack", t: with(func(t *Timing) { t.FireSlack = 2 * time.Second; t.ManagerWait = 2120500 * time.Microsecond })},
		{name: "default daemon timing", t: Timing{LeaseTTL: 8 * time.Second, KeepaliveInterval: time.Second, WatchdogTimeout: 10 * time.Second, StopGuestsDeadline: 7 * time.Second, ManagerWait: 5 * time.Second}},
		{name: "no room at all", t: with(func(t *Timing) { t.ManagerWait = time.Millisecond }),
			want: []string{"raise the manager wait to at least 1.1105s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.t.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate(%+v) = %v", tt.t, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate(%+v) = nil, want %q", tt.t, tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate error:\n%v\nwant it to say %q", err, w)
				}
			}
		})
	}
}

func TestTimingSuggestionsAreValid(t *testing.T) {
	// Following the advice in the error must give a valid timing.
	for _, bad := range []Timing{
		with(func(t *Timing) { t.ManagerWait = time.Second }),
		with(func(t *Timing) { t.StopGuestsDeadline = 6500 * time.Millisecond; t.ManagerWait = 2 * time.Second }),
	} {
		fixed := bad
		fixed.ManagerWait = bad.MinManagerWait()
		if err := fixed.Validate(); err != nil {
			t.Errorf("raising the wait to MinManagerWait is not enough: %v", err)
		}
		lowered := bad
		room := bad.ManagerWait + bad.LeaseTTL - stretch(bad.slack())
		if bad.StopGuestsDeadline == good.StopGuestsDeadline {
			lowered.WatchdogTimeout = maxWholeSeconds(maxStretched(room) - bad.KeepaliveInterval)
		} else {
			lowered.StopGuestsDeadline = maxStretched(maxStretched(room))
		}
		if err := lowered.Validate(); err != nil {
			t.Errorf("lowering as suggested is not enough: %+v: %v", lowered, err)
		}
	}
}

func TestTimingAdvice(t *testing.T) {
	if a := good.Advice(); len(a) != 0 {
		t.Errorf("advice for a good timing: %q", a)
	}
	short := with(func(t *Timing) { t.WatchdogTimeout = 2 * time.Second; t.StopGuestsDeadline = 4 * time.Second })
	if err := short.Validate(); err != nil {
		t.Fatal(err)
	}
	if a := strings.Join(short.Advice(), "\n"); !strings.Contains(a, "raise the watchdog timeout to 4s") {
		t.Errorf("advice = %q", a)
	}
	long := with(func(t *Timing) {
		t.StopGuestsDeadline = 6 * time.Second
		t.ManagerWait = 8 * time.Second
		t.WatchdogTimeout = 6 * time.Second
	})
	if a := strings.Join(long.Advice(), "\n"); !strings.Contains(a, "longer than the lease TTL") {
		t.Errorf("advice = %q", a)
	}
}

// TestWorstCaseNeverDoubleRuns plays random keepalive histories against the
// real Watchdog and checks, for every timing Validate accepts, that the node
// has reset or stopped its guests before the manager starts them elsewhere.
// Requests and answers are delayed or lost at random; answers may arrive
// long after the lease expired.
func TestWorstCaseNeverDoubleRuns(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	ms := func(lo, hi int) time.Duration { return time.Duration(lo+rng.IntN(hi-lo+1)) * time.Millisecond }
	checked := 0
	for i := 0; i < 3000; i++ {
		tm := Timing{
			LeaseTTL:          ms(1000, 15000),
			KeepaliveInterval: ms(100, 5000),
			WatchdogTimeout:   time.Duration(1+rng.IntN(15)) * time.Second,
		}
		tm.StopGuestsDeadline = ms(int(2*tm.KeepaliveInterval/time.Millisecond), 20000)
		tm.ManagerWait = tm.MinManagerWait() + ms(0, 2000)
		if rng.IntN(4) == 0 {
			tm.ManagerWait = ms(0, 20000)
		}
		if tm.Validate() != nil {
			continue
		}
		checked++
		if err := playHistory(t, rng, tm); err != nil {
			t.Fatalf("timing %+v: %v", tm, err)
		}
	}
	if checked < 300 {
		t.Fatalf("only %d random timings were valid; the test checks too little", checked)
	}
}

// playHistory runs one history: keepalives every interval until a random
// cut, after which the store processes none. It returns an error if the
// watchdog could still be counting, or the guests still running, when the
// manager acts.
func playHistory(t *testing.T, rng *rand.Rand, tm Timing) error {
	c, dev := newClock(), &fakeDevice{}
	cfg := tm.WatchdogConfig(filepath.Join(t.TempDir(), "wd"))
	w, err := New(cfg, guardOpener(t, dev), c.now, quiet())
	if err != nil {
		return err
	}
	start := c.now()
	type event struct {
		at   time.Time
		sent time.Time // the request's send time
	}
	var acks []event
	var lastRenewal time.Time
	cut := start.Add(time.Duration(rng.Int64N(int64(10 * tm.LeaseTTL))))
	for s := start; s.Before(cut.Add(2 * tm.LeaseTTL)); s = s.Add(tm.KeepaliveInterval) {
		if rng.IntN(5) == 0 {
			continue // request lost
		}
		// The store renews some time after the request was sent.
		r := s.Add(time.Duration(rng.Int64N(int64(tm.LeaseTTL))) / time.Duration(1+rng.IntN(20)))
		if r.After(cut) {
			continue
		}
		if !lastRenewal.IsZero() && r.Sub(lastRenewal) > tm.LeaseTTL {
			break // the lease already expired; later renewals are refused
		}
		if r.After(lastRenewal) {
			lastRenewal = r
		}
		if rng.IntN(5) == 0 {
			continue // answer lost
		}
		// The answer may be very late, even after the lease expired.
		acks = append(acks, event{at: r.Add(time.Duration(rng.Int64N(int64(2 * tm.LeaseTTL)))), sent: s})
	}
	if lastRenewal.IsZero() {
		return nil
	}
	expiry := lastRenewal.Add(tm.LeaseTTL) // as the manager sees it
	act := expiry.Add(tm.ManagerWait)      // the manager starts the guests elsewhere
	// Deliver answers in arrival order; each one pets with its send time.
	for len(acks) > 0 {
		first := 0
		for i := range acks {
			if acks[i].at.Before(acks[first].at) {
				first = i
			}
		}
		a := acks[first]
		acks = append(acks[:first], acks[first+1:]...)
		c.set(a.at)
		if !w.Armed() {
			_ = w.Arm(Proof{KeepaliveSent: a.sent})
		} else {
			_ = w.Pet(Proof{KeepaliveSent: a.sent})
		}
	}
	if !w.Armed() {
		return nil
	}
	fires := w.LastPet().Add(tm.WatchdogTimeout + tm.slack())
	if fires.After(act) {
		return fmt.Errorf("watchdog fires at +%s but the manager acts at +%s (lease expired at +%s, last pet at +%s)",
			fires.Sub(start), act.Sub(start), expiry.Sub(start), w.LastPet().Sub(start))
	}
	if w.LastPet().After(expiry) {
		return fmt.Errorf("pet at +%s after the lease expired at +%s", w.LastPet().Sub(start), expiry.Sub(start))
	}
	return nil
}

func TestLinuxDeviceAgainstAFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "watchdog")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	notDev(t, path)
	var calls []string
	fakeIoctl := func(fd uintptr, req uint, arg *int32) error {
		switch req {
		case wdiocSetTimeout:
			calls = append(calls, fmt.Sprintf("set %d", *arg))
			*arg = 7 // the driver rounds
		case wdiocGetTimeout:
			calls = append(calls, "get")
			*arg = 7
		case wdiocKeepalive:
			calls = append(calls, "keepalive")
			if len(calls) > 3 {
				return unix.EOPNOTSUPP // from now on, keep alive by writing
			}
		default:
			return unix.ENOTTY
		}
		return nil
	}
	d, err := openWith(path, fakeIoctl)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := d.SetTimeout(6); err != nil || got != 7 {
		t.Errorf("SetTimeout(6) = %d, %v; want the driver's 7", got, err)
	}
	if got, err := d.Timeout(); err != nil || got != 7 {
		t.Errorf("Timeout = %d, %v", got, err)
	}
	if err := d.Keepalive(); err != nil {
		t.Fatal(err)
	}
	if err := d.Keepalive(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.SetTimeout(0); err == nil {
		t.Error("SetTimeout(0) accepted")
	}
	if err := d.Disarm(); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(calls, ","), "set 6,get,keepalive,keepalive"; got != want {
		t.Errorf("ioctls = %s, want %s", got, want)
	}
	if b, _ := os.ReadFile(path); string(b) != "kV" {
		t.Errorf("device got %q, want the fallback keepalive 'k' then the magic 'V'", b)
	}
	if err := d.Keepalive(); err == nil {
		t.Error("Keepalive after Disarm succeeded")
	}
}

func TestLinuxDeviceRealIoctlOnAFile(t *testing.T) {
	// The real ioctl path against a regular file: the kernel answers ENOTTY,
	// which must surface as an error, and keepalive falls back to a write.
	path := filepath.Join(t.TempDir(), "watchdog")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	notDev(t, path)
	d, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.SetTimeout(5); !errors.Is(err, unix.ENOTTY) {
		t.Errorf("SetTimeout on a file = %v, want ENOTTY", err)
	}
	if err := d.Keepalive(); err != nil {
		t.Errorf("Keepalive on a file = %v, want the write fallback", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "k" {
		t.Errorf("file = %q: Close must not write the magic 'V'", b)
	}
	if _, err := Open(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("Open of a missing file succeeded")
	}
}

func TestHostEnsure(t *testing.T) {
	type setup struct {
		devExists bool
		modprobe  string // script body; "" for none
		nowayout  string // "" for no sysfs attribute
	}
	tests := []struct {
		name string
		s    setup
		want string // "" for success
	}{
		{"device present", setup{devExists: true, nowayout: "0"}, ""},
		{"device present, no sysfs", setup{devExists: true}, ""},
		{"nowayout", setup{devExists: true, nowayout: "1"}, "nowayout set"},
		{"softdog loads", setup{modprobe: `[ "$1" = softdog ] && touch "$DEV"`}, ""},
		{"softdog missing", setup{modprobe: `echo "modprobe: FATAL: Module softdog not found" >&2; exit 1`}, "Module softdog not found"},
		{"device never appears", setup{modprobe: `exit 0`}, "did not appear"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			h := Host{Device: filepath.Join(dir, "watchdog"), SysfsDir: filepath.Join(dir, "sys"), Modprobe: filepath.Join(dir, "modprobe")}
			notDev(t, h.Device)
			if tt.s.devExists {
				if err := os.WriteFile(h.Device, nil, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if tt.s.modprobe != "" {
				script := "#!/bin/sh\nDEV=" + h.Device + "\n" + tt.s.modprobe + "\n"
				if err := os.WriteFile(h.Modprobe, []byte(script), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if tt.s.nowayout != "" {
				if err := os.MkdirAll(filepath.Join(h.SysfsDir, "watchdog0"), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(h.SysfsDir, "watchdog0", "nowayout"), []byte(tt.s.nowayout+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			err := h.Ensure(ctx)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Ensure = %v, want %q", err, tt.want)
			}
		})
	}
}
