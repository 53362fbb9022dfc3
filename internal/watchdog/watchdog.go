// Package watchdog owns self-fencing with a Linux watchdog: opening, arming,
// petting and disarming the kernel watchdog device, the rule that a pet needs
// fresh proof that the node still holds its lease, and the timing rules that
// make the manager's wait after a lost lease long enough that the node is
// certain to have reset (or stopped its guests) before they start elsewhere.
//
// The contract with the agent:
//   - Arm only while the node runs guests (or is about to start one), and
//     Disarm only once none runs.
//   - Pet only from the loop that renews the lease, right after a renewal
//     was acknowledged, passing as Proof the time, on this node's clock,
//     just before that keepalive request was sent. The store renewed the
//     lease no earlier than that, so the lease cannot expire in the store's
//     eyes before Proof + lease TTL. (The time the answer arrived would not
//     do: a late answer would let a node pet after its lease expired.)
//   - Pet refuses a proof older than Config.MaxProofAge (one keepalive
//     interval, less than the lease TTL), so the last pet is always before
//     the lease expires as the manager sees it.
//   - If the agent dies, the device is closed without the magic character
//     and the machine resets when the countdown ends: that is the point.
package watchdog

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"time"
)

// Proof is evidence that the node's lease was just confirmed.
type Proof struct {
	// KeepaliveSent is when the acknowledged keepalive request was sent, on
	// the node's clock (a time.Time from the same clock the Watchdog was
	// given, with its monotonic reading).
	KeepaliveSent time.Time
}

// Config configures a Watchdog.
type Config struct {
	// Path is the device file; "" means DefaultDevice.
	Path string
	// Timeout is the watchdog timeout, in whole seconds.
	Timeout time.Duration
	// MaxProofAge is the oldest proof Pet and Arm accept.
	MaxProofAge time.Duration
}

// ErrStaleProof means the proof passed to Pet or Arm was too old: the lease
// was not confirmed recently enough to keep the node alive.
var ErrStaleProof = errors.New("lease confirmation too old")

// ErrNotArmed means Pet was called while the watchdog was disarmed.
var ErrNotArmed = errors.New("watchdog not armed")

// Watchdog is the node's self-fencing watchdog. It is safe for concurrent
// use.
type Watchdog struct {
	cfg  Config
	open Opener
	now  func() time.Time
	log  *slog.Logger

	mu      sync.Mutex
	dev     Device    // nil while disarmed; guarded by mu
	lastPet time.Time // guarded by mu
}

// New returns a disarmed Watchdog. open is Open for the real device; now is
// the clock proofs are measured against (time.Now in the agent).
func New(cfg Config, open Opener, now func() time.Time, log *slog.Logger) (*Watchdog, error) {
	if cfg.Path == "" {
		cfg.Path = DefaultDevice
	}
	if cfg.Timeout < time.Second || cfg.Timeout%time.Second != 0 {
		return nil, fmt.Errorf("watchdog: timeout %s must be a whole number of seconds, at least 1s", cfg.Timeout)
	}
	if cfg.MaxProofAge <= 0 {
		return nil, fmt.Errorf("watchdog: max proof age %s must be positive", cfg.MaxProofAge)
	}
	if log == nil {
		log = slog.Default()
	}
	return &Watchdog{cfg: cfg, open: open, now: now, log: log}, nil
}

func (w *Watchdog) checkProof(p Proof) error {
	age := w.now().Sub(p.KeepaliveSent)
	switch {
	case p.KeepaliveSent.IsZero():
		return fmt.Errorf("%w: no lease confirmation given", ErrStaleProof)
	case age < 0:
		return fmt.Errorf("watchdog: lease confirmation is %s in the future: pass the time the keepalive was sent, from the watchdog's clock", -age)
	case age > w.cfg.MaxProofAge:
		return fmt.Errorf("%w: lease confirmed %s ago, more than %s", ErrStaleProof, age.Round(time.Millisecond), w.cfg.MaxProofAge)
	}
	return nil
}

// Arm opens the watchdog device, sets its timeout and pets it, given fresh
// proof of the lease. It refuses a driver that does not take the exact
// timeout (the timing rules were checked for that one). Arming an armed
// watchdog just pets it.
func (w *Watchdog) Arm(p Proof) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.checkProof(p); err != nil {
		return fmt.Errorf("arm watchdog %s: %w", w.cfg.Path, err)
	}
	if w.dev != nil {
		return w.petLocked()
	}
	dev, err := w.open(w.cfg.Path)
	if err != nil {
		return fmt.Errorf("arm watchdog: %w", err)
	}
	want := int(w.cfg.Timeout / time.Second)
	got, err := dev.SetTimeout(want)
	if err == nil && got != want {
		err = fmt.Errorf("driver set timeout %ds instead of %ds: set the watchdog timeout to %ds and check the timing again", got, want, got)
	}
	if err == nil {
		err = dev.Keepalive()
	}
	if err != nil {
		if derr := dev.Disarm(); derr != nil {
			// Still armed with the driver's own timeout: the node will
			// reset, which is safe; say so loudly.
			w.log.Error("watchdog armed but cannot be set up or disarmed: node will reset", "op", "watchdog", "err", derr)
			w.dev = dev
		}
		return fmt.Errorf("arm watchdog %s: %w", w.cfg.Path, err)
	}
	w.dev = dev
	w.lastPet = w.now()
	w.log.Info("watchdog armed", "op", "watchdog", "device", w.cfg.Path, "timeout", w.cfg.Timeout)
	return nil
}

// Pet restarts the watchdog's countdown, given fresh proof of the lease. It
// refuses (without petting) a proof older than MaxProofAge, returning an
// error wrapping ErrStaleProof: the caller must then stop its guests; the
// watchdog will reset the node if it cannot.
func (w *Watchdog) Pet(p Proof) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.dev == nil {
		return fmt.Errorf("pet watchdog %s: %w", w.cfg.Path, ErrNotArmed)
	}
	if err := w.checkProof(p); err != nil {
		return fmt.Errorf("pet watchdog %s: %w", w.cfg.Path, err)
	}
	return w.petLocked()
}

func (w *Watchdog) petLocked() error {
	if err := w.dev.Keepalive(); err != nil {
		return fmt.Errorf("pet watchdog: %w", err)
	}
	w.lastPet = w.now()
	return nil
}

// Disarm stops the watchdog with the magic close. Call it only once no guest
// runs on the node. If it fails the watchdog stays armed.
func (w *Watchdog) Disarm() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.dev == nil {
		return nil
	}
	if err := w.dev.Disarm(); err != nil {
		return fmt.Errorf("disarm watchdog: %w", err)
	}
	w.dev = nil
	w.log.Info("watchdog disarmed", "op", "watchdog", "device", w.cfg.Path)
	return nil
}

// Armed reports whether the watchdog is armed.
func (w *Watchdog) Armed() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.dev != nil
}

// LastPet returns when the watchdog was last petted (or armed).
func (w *Watchdog) LastPet() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lastPet
}

// Timing is the self-fencing timing of a cluster in watchdog mode.
type Timing struct {
	// LeaseTTL is the node's lease TTL in the store: the store (and so the
	// manager) sees the lease expire LeaseTTL after the last renewal.
	LeaseTTL time.Duration
	// KeepaliveInterval is how often the agent renews its lease (and pets).
	KeepaliveInterval time.Duration
	// WatchdogTimeout is the watchdog's timeout (whole seconds).
	WatchdogTimeout time.Duration
	// StopGuestsDeadline is how long after its last lease confirmation an
	// agent that cannot renew has killed its guests itself.
	StopGuestsDeadline time.Duration
	// ManagerWait is how long the manager waits, after it sees a node's lease
	// expire, before it treats the node as fenced and starts its guests
	// elsewhere.
	ManagerWait time.Duration
	// FireSlack is how late a watchdog may fire after its timeout (timer
	// granularity, hardware that counts in coarse ticks); 0 means
	// DefaultFireSlack.
	FireSlack time.Duration
}

// DefaultFireSlack is the slack allowed for a watchdog firing late.
const DefaultFireSlack = time.Second

// clockRate bounds how much faster one machine's clock may run than
// another's over the intervals involved (NTP keeps it far smaller).
const clockRate = 0.01

func (t Timing) slack() time.Duration {
	if t.FireSlack > 0 {
		return t.FireSlack
	}
	return DefaultFireSlack
}

// MaxProofAge is the oldest lease confirmation a pet may rely on: one
// keepalive interval.
func (t Timing) MaxProofAge() time.Duration { return t.KeepaliveInterval }

// WatchdogConfig returns the Watchdog configuration for this timing.
func (t Timing) WatchdogConfig(path string) Config {
	return Config{Path: path, Timeout: t.WatchdogTimeout, MaxProofAge: t.MaxProofAge()}
}

// stretch returns d lengthened by the clock rate tolerance.
func stretch(d time.Duration) time.Duration {
	return d + time.Duration(math.Ceil(float64(d)*clockRate))
}

// MinManagerWait is the shortest safe ManagerWait for the other values
// (docs/fencing.md proves it). Let S be when the node sent the renewal
// behind its last pet, on its clock. The store renewed the lease no
// earlier than S, so the manager sees it expire no earlier than S + lease
// TTL; a pet needs a confirmation younger than one keepalive interval, so
// the last pet is at most S + keepalive interval, and the watchdog fires
// at most a watchdog timeout plus slack later. A live agent has killed its
// guests within the stop-guests deadline (plus slack) of its latest
// confirmed renewal, which is also no later than the lease's expiry less
// the TTL. Every duration is measured on a different clock, each of which
// may run up to 1% apart: the node's intervals are stretched twice (its
// clock against the store's and the manager's). So the manager waits
// max(keepalive + watchdog timeout, stop-guests deadline), stretched, plus
// slack, less the lease TTL (never less than nothing).
func (t Timing) MinManagerWait() time.Duration {
	need := max(stretch(stretch(t.KeepaliveInterval+t.WatchdogTimeout)), stretch(stretch(t.StopGuestsDeadline))) + stretch(t.slack()) - t.LeaseTTL
	return max(need, 0)
}

// FencedAt is when the manager may treat a node as fenced, given when it
// saw the node's lease expire.
func (t Timing) FencedAt(leaseExpiredSeen time.Time) time.Time {
	return leaseExpiredSeen.Add(t.ManagerWait)
}

// FailoverDelay is how long after a node's last lease renewal its guests
// may start elsewhere: the lease TTL plus the manager's wait.
func (t Timing) FailoverDelay() time.Duration { return t.LeaseTTL + t.ManagerWait }

// Validate refuses a timing that could let a guest run on two nodes at once,
// or that cannot work at all, saying which value to change.
func (t Timing) Validate() error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	for _, v := range []struct {
		name string
		d    time.Duration
	}{
		{"lease TTL", t.LeaseTTL},
		{"keepalive interval", t.KeepaliveInterval},
		{"watchdog timeout", t.WatchdogTimeout},
		{"stop-guests deadline", t.StopGuestsDeadline},
		{"manager wait", t.ManagerWait},
	} {
		if v.d <= 0 {
			add("%s is %s: set it to a positive duration", v.name, v.d)
		}
	}
	if t.FireSlack < 0 {
		add("watchdog fire slack is %s: set it to 0 for the default or a positive duration", t.FireSlack)
	}
	if len(errs) > 0 {
		return fmt.Errorf("self-fence timing: %w", errors.Join(errs...))
	}
	if t.WatchdogTimeout%time.Second != 0 {
		add("watchdog timeout %s is not a whole number of seconds: round it (the kernel takes seconds)", t.WatchdogTimeout)
	}
	// The lease must survive a lost keepalive, or it expires at every hiccup.
	if 2*t.KeepaliveInterval > t.LeaseTTL {
		add("keepalive interval %s is more than half the lease TTL %s: lower the keepalive interval to at most %s or raise the lease TTL to at least %s",
			t.KeepaliveInterval, t.LeaseTTL, t.LeaseTTL/2, 2*t.KeepaliveInterval)
	}
	// A healthy node pets every keepalive interval; a watchdog shorter than
	// two intervals resets it after one late keepalive.
	if t.WatchdogTimeout < 2*t.KeepaliveInterval {
		add("watchdog timeout %s is less than two keepalive intervals (%s): raise the watchdog timeout to at least %s or lower the keepalive interval to at most %s",
			t.WatchdogTimeout, 2*t.KeepaliveInterval, roundUpSecond(2*t.KeepaliveInterval), t.WatchdogTimeout/2)
	}
	// An agent that kills its guests before it has missed two keepalives
	// kills them at every hiccup.
	if t.StopGuestsDeadline < 2*t.KeepaliveInterval {
		add("stop-guests deadline %s is less than two keepalive intervals (%s): raise it or lower the keepalive interval", t.StopGuestsDeadline, 2*t.KeepaliveInterval)
	}
	// Safety: the manager may only act once the node is certain to have
	// reset or stopped its guests.
	if need := t.MinManagerWait(); t.ManagerWait < need {
		// room is how long the node's own intervals may last, stretched.
		room := t.ManagerWait + t.LeaseTTL - stretch(t.slack())
		var lower []string
		if stretch(stretch(t.KeepaliveInterval+t.WatchdogTimeout)) > room {
			if wd := maxWholeSeconds(maxStretched(room) - t.KeepaliveInterval); wd >= time.Second {
				lower = append(lower, fmt.Sprintf("the watchdog timeout to %s", wd))
			}
		}
		if stretch(stretch(t.StopGuestsDeadline)) > room {
			if d := maxStretched(maxStretched(room)); d > 0 {
				lower = append(lower, fmt.Sprintf("the stop-guests deadline to %s", d))
			}
		}
		alt := ""
		if len(lower) > 0 {
			alt = " or lower " + strings.Join(lower, " and ")
		}
		add("manager wait %s is too short: the node may reset or stop its guests as late as %s after its lease expires (keepalive %s, watchdog timeout %s, stop-guests deadline %s, lease TTL %s, %s slack), so a guest could run twice: raise the manager wait to at least %s%s",
			t.ManagerWait, need, t.KeepaliveInterval, t.WatchdogTimeout, t.StopGuestsDeadline, t.LeaseTTL, t.slack(), need, alt)
	}
	if len(errs) > 0 {
		return fmt.Errorf("self-fence timing: %w", errors.Join(errs...))
	}
	return nil
}

// Advice returns suggestions for a valid timing that works but will reset
// or stop more than it needs to.
func (t Timing) Advice() []string {
	var out []string
	if t.WatchdogTimeout < t.StopGuestsDeadline {
		out = append(out, fmt.Sprintf("watchdog timeout %s is shorter than the stop-guests deadline %s: a node cut off from the cluster resets before it can stop its guests itself; raise the watchdog timeout to %s to let it",
			t.WatchdogTimeout, t.StopGuestsDeadline, roundUpSecond(t.StopGuestsDeadline)))
	}
	if t.StopGuestsDeadline > t.LeaseTTL {
		out = append(out, fmt.Sprintf("stop-guests deadline %s is longer than the lease TTL %s: a node cut off keeps its guests after its lease expired, and failover waits for it", t.StopGuestsDeadline, t.LeaseTTL))
	}
	return out
}

// maxWholeSeconds is the largest whole-second watchdog timeout w with
// stretch(w) <= d.
func maxWholeSeconds(d time.Duration) time.Duration {
	s := time.Duration(math.Floor(float64(d)/(1+clockRate)/float64(time.Second))) * time.Second
	for s > 0 && stretch(s) > d {
		s -= time.Second
	}
	return s
}

// maxStretched is the largest duration x, to the millisecond, with
// stretch(x) <= d.
func maxStretched(d time.Duration) time.Duration {
	x := time.Duration(float64(d) / (1 + clockRate)).Truncate(time.Millisecond)
	for x > 0 && stretch(x) > d {
		x -= time.Millisecond
	}
	return x
}

func roundUpSecond(d time.Duration) time.Duration {
	return (d + time.Second - 1).Truncate(time.Second)
}
