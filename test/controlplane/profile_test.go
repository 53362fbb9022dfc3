package controlplane

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// profileOnSignal serves -cp.profile in the manager's process: SIGUSR1
// starts a CPU profile, SIGUSR2 ends it and writes it to path (whole once
// the file has its name).
func profileOnSignal(path string) {
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGUSR1, syscall.SIGUSR2)
	var f *os.File
	for s := range sig {
		switch {
		case s == syscall.SIGUSR1 && f == nil:
			var err error
			if f, err = os.Create(path + ".tmp"); err != nil {
				fmt.Fprintln(os.Stderr, "profile:", err)
				continue
			}
			if err := pprof.StartCPUProfile(f); err != nil {
				fmt.Fprintln(os.Stderr, "profile:", err)
			}
		case s == syscall.SIGUSR2 && f != nil:
			pprof.StopCPUProfile()
			f.Close()
			f = nil
			_ = os.Rename(path+".tmp", path)
		}
	}
}

// profileFile starts a CPU profile to path; the function it returns ends
// it (and does nothing if it could not start).
func profileFile(path string) func() {
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "profile:", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintln(os.Stderr, "profile:", err)
		f.Close()
		return func() {}
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}

// cpuTime is a process's CPU time (user and system) so far, 0 if unknown.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name, in parentheses, may hold spaces: fields count
	// from after it. utime and stime are fields 14 and 15, in clock
	// ticks (100 a second on Linux).
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	k, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+k) * 10 * time.Millisecond
}

// window measures the host loss for -cp.profile: every process's CPU
// time, the etcd members' request counts, and CPU profiles of the manager
// and of this process.
type window struct {
	t       *testing.T
	dir     string
	procs   map[string]int
	cpu0    map[string]time.Duration
	t0      time.Time
	members []string // external etcd members' client URLs
	req0    []map[string]float64
	self    *os.File
}

func startWindow(t *testing.T, dir string, procs map[string]int, members []string) *window {
	w := &window{t: t, dir: dir, procs: procs, cpu0: map[string]time.Duration{}, members: members, t0: time.Now()}
	for name, pid := range procs {
		w.cpu0[name] = cpuTime(pid)
	}
	for _, m := range members {
		w.req0 = append(w.req0, etcdCounters(m))
	}
	if pid, ok := procs["manager"]; ok {
		_ = syscall.Kill(pid, syscall.SIGUSR1)
	}
	f, err := os.Create(filepath.Join(dir, "hosts.cpu"))
	if err != nil {
		t.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		t.Fatal(err)
	}
	w.self = f
	return w
}

func (w *window) stop() {
	pprof.StopCPUProfile()
	w.self.Close()
	wall := time.Since(w.t0)
	if pid, ok := w.procs["manager"]; ok {
		_ = syscall.Kill(pid, syscall.SIGUSR2)
		waitFor(w.t, "the manager's profile", 10*time.Second, func() bool {
			_, err := os.Stat(filepath.Join(w.dir, "manager.cpu"))
			return err == nil
		})
	}
	var names []string
	for name := range w.procs {
		names = append(names, name)
	}
	sort.Strings(names)
	var parts []string
	var total time.Duration
	for _, name := range names {
		d := cpuTime(w.procs[name]) - w.cpu0[name]
		total += d
		parts = append(parts, fmt.Sprintf("%s %v", name, d.Round(10*time.Millisecond)))
	}
	fmt.Printf("  CPU over the loss (%v wall, %.2f cores busy): %s\n", wall.Round(time.Millisecond), total.Seconds()/wall.Seconds(), strings.Join(parts, ", "))
	for i, m := range w.members {
		now := etcdCounters(m)
		var keys []string
		for k := range now {
			if now[k]-w.req0[i][k] > 0 {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		var out []string
		for _, k := range keys {
			out = append(out, fmt.Sprintf("%s %.0f", k, now[k]-w.req0[i][k]))
		}
		fmt.Printf("  etcd member %d over the loss: %s\n", i, strings.Join(out, ", "))
	}
	fmt.Printf("  profiles in %s (manager.cpu, hosts.cpu)\n", w.dir)
}

// etcdCounters reads a member's request counters: gRPC requests started
// by method, and proposals committed.
func etcdCounters(member string) map[string]float64 {
	out := map[string]float64{}
	resp, err := http.Get(member + "/metrics")
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 16<<20))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		var name string
		switch {
		case strings.HasPrefix(line, "grpc_server_started_total{"):
			_, m, ok := strings.Cut(line, `grpc_method="`)
			if !ok {
				continue
			}
			m, _, _ = strings.Cut(m, `"`)
			name = m
		case strings.HasPrefix(line, "etcd_server_proposals_committed_total "):
			name = "proposals"
		default:
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			out[name] += v
		}
	}
	return out
}
