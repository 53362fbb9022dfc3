package health

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
	"unicode/utf8"

	"github.com/haven-ha/haven/internal/guestdef"
)

// fakeAgent answers guest agent commands like qemu-guest-agent would; alive
// says whether it answers at all (a hung guest does not).
type fakeAgent struct {
	mu       sync.Mutex
	alive    map[string]bool
	exitCode int
	addrs    []string
	calls    atomic.Int64
	running  atomic.Int64
	maxRun   atomic.Int64
	delay    time.Duration
}

func (f *fakeAgent) call(ctx context.Context, name string, cmd []byte) (json.RawMessage, error) {
	f.calls.Add(1)
	n := f.running.Add(1)
	defer f.running.Add(-1)
	for {
		m := f.maxRun.Load()
		if n <= m || f.maxRun.CompareAndSwap(m, n) {
			break
		}
	}
	if f.delay > 0 {
		select {
		case <-time.After(f.delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f.mu.Lock()
	alive, exitCode := f.alive[name], f.exitCode
	f.mu.Unlock()
	if !alive {
		<-ctx.Done()
		return nil, fmt.Errorf("guest agent did not answer: %w", ctx.Err())
	}
	var c struct {
		Execute string `json:"execute"`
	}
	json.Unmarshal(cmd, &c)
	switch c.Execute {
	case "guest-ping":
		return json.RawMessage(`{}`), nil
	case "guest-exec":
		return json.RawMessage(`{"pid":42}`), nil
	case "guest-exec-status":
		out := base64.StdEncoding.EncodeToString([]byte("httpd not running\n"))
		return json.RawMessage(fmt.Sprintf(`{"exited":true,"exitcode":%d,"out-data":%q}`, exitCode, out)), nil
	case "guest-network-get-interfaces":
		var ips []string
		for _, a := range f.addrs {
			ips = append(ips, fmt.Sprintf(`{"ip-address-type":"ipv4","ip-address":%q}`, a))
		}
		return json.RawMessage(`[{"name":"lo","ip-addresses":[{"ip-address-type":"ipv4","ip-address":"127.0.0.1"}]},{"name":"eth0","ip-addresses":[` + strings.Join(ips, ",") + `]}]`), nil
	}
	return nil, errors.New("unknown command " + c.Execute)
}

func (f *fakeAgent) set(name string, alive bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.alive == nil {
		f.alive = map[string]bool{}
	}
	f.alive[name] = alive
}

type failure struct {
	guest, reason string
	at            time.Time
}

type failures struct {
	mu   sync.Mutex
	list []failure
}

func (f *failures) add(g, r string) {
	f.mu.Lock()
	f.list = append(f.list, failure{g, r, time.Now()})
	f.mu.Unlock()
}

func (f *failures) get() []failure {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]failure(nil), f.list...)
}

func def(name string, checks ...guestdef.Check) guestdef.Definition {
	return guestdef.Definition{Name: name, Health: checks}
}

func sec(n float64) guestdef.Duration { return guestdef.Duration(n * float64(time.Second)) }

// A hung guest (its agent stops answering) is failed after failures ×
// interval, and not before; the reason names the check.
func TestHeartbeatHang(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ag := &fakeAgent{}
		ag.set("g", true)
		var fs failures
		m := New(Config{Logger: quiet, Agent: ag.call, OnFail: fs.add})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go m.Run(ctx)
		start := time.Now()
		m.Watch(guestdef.Definition{Name: "g", GuestAgent: true})
		time.Sleep(2 * time.Minute)
		if got := fs.get(); len(got) != 0 {
			t.Fatalf("a healthy guest failed: %+v", got)
		}
		ag.set("g", false)
		hung := time.Now()
		time.Sleep(time.Minute)
		got := fs.get()
		if len(got) != 1 {
			t.Fatalf("failures after the hang = %+v, want one", got)
		}
		took := got[0].at.Sub(hung)
		// Checks every 5 s, 3 s timeout, 3 in a row.
		if took < 2*guestdef.HeartbeatInterval || took > 3*guestdef.HeartbeatInterval+guestdef.HeartbeatTimeout {
			t.Errorf("hang noticed after %s, want within 3×5s+3s", took)
		}
		if !strings.Contains(got[0].reason, "guest agent heartbeat") || !strings.Contains(got[0].reason, "3 times in a row") {
			t.Errorf("reason = %q", got[0].reason)
		}
		if m.Watching("g") {
			t.Error("still checking a failed guest")
		}
		_ = start
	})
}

// Failures during the start grace do not count until the check passed once.
func TestStartGrace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ag := &fakeAgent{}
		var fs failures
		m := New(Config{Logger: quiet, Agent: ag.call, OnFail: fs.add})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go m.Run(ctx)
		start := time.Now()
		m.Watch(def("g", guestdef.Check{Agent: true, Interval: sec(1), Timeout: sec(0.5), Failures: 2, StartGrace: sec(30)}))
		time.Sleep(40 * time.Second)
		got := fs.get()
		if len(got) != 1 {
			t.Fatalf("failures = %+v, want one after the grace", got)
		}
		if d := got[0].at.Sub(start); d < 30*time.Second || d > 33*time.Second {
			t.Errorf("failed %s after start, want just after the 30s grace + 2 checks", d)
		}

		// A guest up early: a pass ends the grace.
		ag.set("h", true)
		start = time.Now()
		m.Watch(def("h", guestdef.Check{Agent: true, Interval: sec(1), Timeout: sec(0.5), Failures: 2, StartGrace: sec(60)}))
		time.Sleep(5 * time.Second)
		ag.set("h", false)
		time.Sleep(10 * time.Second)
		got = fs.get()
		if len(got) != 2 || got[1].guest != "h" {
			t.Fatalf("failures = %+v, want h failed within its grace after passing once", got)
		}
		if d := got[1].at.Sub(start); d > 10*time.Second {
			t.Errorf("h failed %s after start; the grace should have ended with its first pass", d)
		}
	})
}

func TestExecCheck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ag := &fakeAgent{exitCode: 0}
		ag.set("g", true)
		var fs failures
		m := New(Config{Logger: quiet, Agent: ag.call, OnFail: fs.add})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go m.Run(ctx)
		m.Watch(def("g", guestdef.Check{Name: "httpd", Exec: []string{"/bin/pidof", "httpd"}, Interval: sec(2), Failures: 2, StartGrace: sec(1)}))
		time.Sleep(10 * time.Second)
		if len(fs.get()) != 0 {
			t.Fatalf("passing exec failed: %+v", fs.get())
		}
		if r := m.Results("g"); len(r) != 1 || !r[0].OK || r[0].Kind != "exec" {
			t.Errorf("results = %+v", r)
		}
		ag.mu.Lock()
		ag.exitCode = 1
		ag.mu.Unlock()
		time.Sleep(10 * time.Second)
		got := fs.get()
		if len(got) != 1 {
			t.Fatalf("failures = %+v", got)
		}
		for _, w := range []string{`health check "httpd" (exec) failed 2 times in a row`, "exited 1, want 0", "httpd not running"} {
			if !strings.Contains(got[0].reason, w) {
				t.Errorf("reason %q lacks %q", got[0].reason, w)
			}
		}
	})
}

// Hundreds of guests share a bounded number of workers.
func TestBoundedConcurrency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ag := &fakeAgent{delay: 100 * time.Millisecond}
		var fs failures
		m := New(Config{Logger: quiet, Agent: ag.call, OnFail: fs.add, Workers: 8})
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go m.Run(ctx)
		for i := range 300 {
			name := fmt.Sprint("g", i)
			ag.set(name, true)
			m.Watch(def(name, guestdef.Check{Agent: true, Interval: sec(5), Timeout: sec(1)}))
		}
		time.Sleep(time.Minute)
		if n := ag.maxRun.Load(); n > 8 {
			t.Errorf("%d checks ran at once, want at most 8", n)
		}
		// 300 guests × 12 checks a minute each, at 100 ms and 8 at once:
		// 80 per second fit; every check must have run.
		if c := ag.calls.Load(); c < 300*11 {
			t.Errorf("only %d checks ran in a minute, want about %d", c, 300*12)
		}
		if len(fs.get()) != 0 {
			t.Errorf("failures: %+v", fs.get()[0])
		}
	})
}

// TCP and HTTP checks against real listeners on loopback (a network the
// test declares); the address comes from the guest agent when the
// definition gives none.
func TestTCPAndHTTP(t *testing.T) {
	status := atomic.Int64{}
	status.Store(200)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health" {
			w.WriteHeader(404)
			return
		}
		w.WriteHeader(int(status.Load()))
	}))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	ag := &fakeAgent{addrs: []string{"127.0.0.1"}}
	ag.set("g", true)
	var fs failures
	m := New(Config{Logger: quiet, Agent: ag.call, OnFail: fs.add, Networks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go m.Run(ctx)
	fast := guestdef.Check{Interval: sec(0.1), Timeout: sec(0.1), Failures: 2, StartGrace: sec(0.1)}
	h, tc := fast, fast
	h.HTTP = "http://guest:" + port + "/health"
	tc.TCP = atoi(port)
	m.Watch(def("g", h, tc))
	waitFor(t, func() bool {
		r := m.Results("g")
		return len(r) == 2 && !r[0].At.IsZero() && !r[1].At.IsZero()
	})
	if r := m.Results("g"); !r[0].OK || !r[1].OK || !strings.Contains(r[0].Output, "127.0.0.1:"+port+"/health: 200") {
		t.Fatalf("results = %+v", r)
	}
	status.Store(503)
	waitFor(t, func() bool { return len(fs.get()) == 1 })
	if r := fs.get()[0].reason; !strings.Contains(r, `health check "http" (http) failed 2 times in a row`) || !strings.Contains(r, "status 503, want 200") {
		t.Errorf("reason = %q", r)
	}

	// TCP alone, with a configured address; the listener goes away.
	d := def("t", tc)
	d.Address = "127.0.0.1"
	m.Watch(d)
	waitFor(t, func() bool { r := m.Results("t"); return len(r) == 1 && r[0].OK && !r[0].At.IsZero() })
	srv.Close()
	waitFor(t, func() bool { return len(fs.get()) == 2 })
	if r := fs.get()[1]; r.guest != "t" || !strings.Contains(r.reason, "connect 127.0.0.1:"+port) {
		t.Errorf("tcp failure = %+v", r)
	}
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func atoi(s string) int {
	n := 0
	fmt.Sscan(s, &n)
	return n
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// OnChange fires on a check's first result and when its status or count of
// failures changes, not at every passing run; results carry the failures
// in a row and a bounded output.
func TestOnChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ag := &fakeAgent{exitCode: 0}
		ag.set("g", true)
		var mu sync.Mutex
		changes := 0
		var seen []Result
		var m *Monitor
		m = New(Config{Logger: quiet, Agent: ag.call, OnChange: func(g string) {
			if g != "g" {
				t.Errorf("change for %q", g)
			}
			r := m.Results(g)
			mu.Lock()
			changes++
			seen = append(seen, r[0])
			mu.Unlock()
		}})
		count := func() int { mu.Lock(); defer mu.Unlock(); return changes }
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go m.Run(ctx)
		m.Watch(def("g", guestdef.Check{Name: "httpd", Exec: []string{"/bin/pidof", "httpd"}, Interval: sec(1), Failures: 5, StartGrace: sec(1)}))
		time.Sleep(20500 * time.Millisecond) // 20 passing runs
		if n := count(); n != 1 {
			t.Fatalf("changes after 20 passing runs = %d, want 1 (the first result)", n)
		}
		ag.mu.Lock()
		ag.exitCode = 1
		ag.mu.Unlock()
		time.Sleep(2 * time.Second) // two failing runs
		if n := count(); n != 3 {
			t.Fatalf("changes after two failures = %d, want 3", n)
		}
		mu.Lock()
		last := seen[len(seen)-1]
		mu.Unlock()
		if last.OK || last.Failures != 2 || !strings.Contains(last.Output, "exited 1") || last.At.IsZero() {
			t.Errorf("last result = %+v, want failing twice in a row with its output", last)
		}
		ag.mu.Lock()
		ag.exitCode = 0
		ag.mu.Unlock()
		time.Sleep(5 * time.Second)
		if n := count(); n != 4 {
			t.Fatalf("changes after recovery = %d, want 4", n)
		}
		if r := m.Results("g"); !r[0].OK || r[0].Failures != 0 {
			t.Errorf("after recovery = %+v", r)
		}
	})
}

func TestTruncate(t *testing.T) {
	long := strings.Repeat("é", MaxOutput)
	got := truncate(long)
	if len(got) > MaxOutput || !strings.HasSuffix(got, "…") || !utf8.ValidString(got) {
		t.Errorf("truncate: %d bytes, valid %v", len(got), utf8.ValidString(got))
	}
	if truncate("short") != "short" {
		t.Error("short output changed")
	}
}

// Issue 10: an operator cannot aim a host's tcp or http checks at any
// address. A check connects only to an address the guest's agent reports
// for the guest, or one in a network the host's admin declared; never to
// loopback (not even when the guest reports it), whatever the definition's
// address, the URL's host or a name resolving to it says.
func TestCheckTargetsConfined(t *testing.T) {
	once := guestdef.Check{Name: "c", Interval: sec(0.1), Timeout: sec(2), Failures: 1000}
	tcp := func(addr string, port int) guestdef.Definition {
		c := once
		c.TCP = port
		d := def("g", c)
		d.Address = addr
		d.NICs = []guestdef.NIC{{Bridge: "br-guests"}}
		return d
	}
	web := func(addr, url string) guestdef.Definition {
		d := tcp(addr, 0)
		d.Health[0].TCP, d.Health[0].HTTP = 0, url
		return d
	}
	// The guests' bridge is 192.0.2.0/24 on this host, which is 192.0.2.1
	// there; the other hosts (and the store) are 10.9.9.1 and 10.9.9.2.
	guestNets := func(d guestdef.Definition) []netip.Prefix {
		if len(d.NICs) == 1 && d.NICs[0].Bridge == "br-guests" {
			return []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
		}
		return nil
	}
	hostAddrs := func(context.Context) []netip.Addr {
		return []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("10.9.9.1"), netip.MustParseAddr("10.9.9.2")}
	}
	for _, tt := range []struct {
		name     string
		networks string
		def      guestdef.Definition
		dial     string // "" refused
		want     string
		agent    []string // what the guest's agent reports; nil: 192.0.2.10, 127.0.0.1
	}{
		{"the guest's address, from its agent", "", tcp("", 22), "192.0.2.10:22", "connected", nil},
		{"the definition's address, the guest's", "", tcp("192.0.2.10", 22), "192.0.2.10:22", "connected", nil},
		{"the definition's address, elsewhere", "", tcp("10.9.9.9", 22), "", "10.9.9.9 is not one of the guest's addresses (its guest agent reports [192.0.2.10 127.0.0.1])", nil},
		{"loopback the guest reports", "", tcp("127.0.0.1", 7400), "", "127.0.0.1 is not the guest's address (loopback", nil},
		{"IPv4-mapped loopback", "", tcp("::ffff:127.0.0.1", 7400), "", "127.0.0.1 is not the guest's address", nil},
		{"a URL naming another host", "", web("", "http://10.9.9.9:80/x"), "", "10.9.9.9 is not one of the guest's addresses", nil},
		{"a name resolving to loopback", "", web("", "http://localhost:7400/"), "", "is not the guest's address (loopback", nil},
		{"a declared network", "10.9.0.0/16", tcp("10.9.9.9", 22), "10.9.9.9:22", "connected", nil},
		{"a URL in a declared network", "10.9.0.0/16", web("", "http://10.9.9.9:8080/x"), "10.9.9.9:8080", "GET http://10.9.9.9:8080/x", nil},
		// A guest has its agent report an address that is not its own.
		{"this host's address on the guests' bridge, reported", "", tcp("", 7400), "", "192.0.2.1 is an address of a cluster host", []string{"192.0.2.1"}},
		{"another host's address, reported", "", tcp("", 2379), "", "10.9.9.1 is an address of a cluster host", []string{"10.9.9.1"}},
		{"a machine outside the guest's networks, reported", "", tcp("", 22), "", "198.51.100.7, which the guest's agent reports, is not in the guest's networks ([192.0.2.0/24] on this host's bridges br-guests)", []string{"198.51.100.7"}},
		{"a host's address in a declared network", "10.9.0.0/16", tcp("10.9.9.2", 2379), "", "10.9.9.2 is an address of a cluster host (this one, another host or the store): health checks never connect there unless the host's admin declares that very address (agent --health-network 10.9.9.2/32)", nil},
		{"a host's address the admin declared", "10.9.9.2/32", tcp("10.9.9.2", 2379), "10.9.9.2:2379", "connected", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ag := &fakeAgent{addrs: tt.agent}
			if ag.addrs == nil {
				ag.addrs = []string{"192.0.2.10", "127.0.0.1"}
			}
			ag.set("g", true)
			var mu sync.Mutex
			var dialed []string
			dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
				mu.Lock()
				dialed = append(dialed, addr)
				mu.Unlock()
				c, s := net.Pipe()
				go func() { // an HTTP server answering 200 once
					http.ReadRequest(bufio.NewReader(s))
					s.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
					s.Close()
				}()
				return c, nil
			}
			var nets []netip.Prefix
			if tt.networks != "" {
				nets = []netip.Prefix{netip.MustParsePrefix(tt.networks)}
			}
			m := New(Config{Logger: quiet, Agent: ag.call, Dial: dial, Networks: nets, GuestNetworks: guestNets, HostAddrs: hostAddrs})
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			go m.Run(ctx)
			m.Watch(tt.def)
			waitFor(t, func() bool { r := m.Results("g"); return len(r) == 1 && !r[0].At.IsZero() })
			r := m.Results("g")[0]
			mu.Lock()
			got := dialed
			mu.Unlock()
			if tt.dial == "" {
				if r.OK || len(got) != 0 || !strings.Contains(r.Output, tt.want) {
					t.Errorf("result %+v, dialed %v; want refused saying %q, nothing dialed", r, got, tt.want)
				}
				return
			}
			if len(got) == 0 || got[0] != tt.dial || !strings.Contains(r.Output, tt.want) {
				t.Errorf("result %+v, dialed %v; want %s dialed, output with %q", r, got, tt.dial, tt.want)
			}
		})
	}
}

// A guest's networks are the subnets of the host's addresses on the bridges
// its NICs attach to (here the loopback interface stands for a bridge); a
// NIC with user networking or on an unknown bridge adds none.
func TestBridgeNetworks(t *testing.T) {
	d := guestdef.Definition{Name: "g", NICs: []guestdef.NIC{{Bridge: "lo"}, {User: true}, {Bridge: "no-such-bridge"}}}
	got := BridgeNetworks(d)
	if !slices.Contains(got, netip.MustParsePrefix("127.0.0.0/8")) {
		t.Errorf("networks %v, want 127.0.0.0/8 among them", got)
	}
	if got := BridgeNetworks(guestdef.Definition{Name: "g", NICs: []guestdef.NIC{{User: true}}}); len(got) != 0 {
		t.Errorf("user networking: networks %v, want none", got)
	}
}
