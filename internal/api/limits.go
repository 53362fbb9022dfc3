package api

import (
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Operators write guest records; the store keeps every version until it
// compacts (an hour by default), so a loop of edits could fill its quota and
// stop the cluster. Guest writes are therefore bounded three ways: a record's
// size (MaxGuestRecord), edits per guest (a token bucket per name), and the
// bytes all guest writes through this agent add (a token bucket in bytes).

// MaxGuestRecord bounds a stored guest record (its JSON).
const MaxGuestRecord = 256 << 10

const (
	guestEditBurst  = 10              // edits of one guest at once
	guestEditEvery  = 3 * time.Second // one more each
	writeBurstBytes = 32 << 20        // bytes of guest records at once
	writeBytesPerS  = 64 << 10        // refilled per second (225 MiB an hour)
	editTableMax    = 10000
)

type bucket struct {
	tokens float64
	at     time.Time
}

// take refills b at rate per second up to burst and takes n when it can;
// otherwise it says how long until it could.
func (b *bucket) take(n, burst, rate float64, now time.Time) (bool, time.Duration) {
	if b.at.IsZero() {
		b.tokens = burst
	} else {
		b.tokens = min(burst, b.tokens+now.Sub(b.at).Seconds()*rate)
	}
	b.at = now
	if b.tokens >= n {
		b.tokens -= n
		return true, 0
	}
	return false, time.Duration((n - b.tokens) / rate * float64(time.Second))
}

type writeLimiter struct {
	mu     sync.Mutex
	bytes  bucket
	guests map[string]*bucket
}

func (o *Ops) limiter() *writeLimiter {
	o.limiterOnce.Do(func() { o.writes = &writeLimiter{guests: map[string]*bucket{}} })
	return o.writes
}

// allowGuestWrite charges a write of size bytes to guest name, or returns
// the 429 (or 413) to answer.
func (o *Ops) allowGuestWrite(w http.ResponseWriter, name string, size int) error {
	if size > MaxGuestRecord {
		return Errorf(http.StatusRequestEntityTooLarge, "", "guest %q's record would take %d bytes; at most %d", name, size, MaxGuestRecord)
	}
	l := o.limiter()
	now := o.srv.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.guests[name]
	if b == nil {
		if len(l.guests) >= editTableMax {
			for k, v := range l.guests {
				if now.Sub(v.at) > guestEditBurst*guestEditEvery {
					delete(l.guests, k)
				}
			}
		}
		b = &bucket{}
		if len(l.guests) < editTableMax {
			l.guests[name] = b
		}
	}
	if ok, wait := b.take(1, guestEditBurst, 1/guestEditEvery.Seconds(), now); !ok {
		w.Header().Set("Retry-After", strconv.Itoa(int(wait.Seconds())+1))
		return Errorf(http.StatusTooManyRequests, "", "guest %q was changed too often; try again in %d s", name, int(wait.Seconds())+1)
	}
	if ok, wait := l.bytes.take(float64(size), writeBurstBytes, writeBytesPerS, now); !ok {
		b.tokens++ // not charged to the guest
		w.Header().Set("Retry-After", strconv.Itoa(int(wait.Seconds())+1))
		return Errorf(http.StatusTooManyRequests, "", "guests were changed too much through this agent (the store keeps every version for a while); try again in %d s", int(wait.Seconds())+1)
	}
	return nil
}
