package testbed

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The test binary doubles as the plain processes run inside hosts:
// HAVEN_TESTBED_HELPER=echo:PORT serves a TCP echo, dial:ADDR:PORT checks one.
func TestMain(m *testing.M) {
	if mode := os.Getenv("HAVEN_TESTBED_HELPER"); mode != "" {
		os.Exit(helper(mode))
	}
	os.Exit(m.Run())
}

func helper(mode string) int {
	kind, arg, _ := strings.Cut(mode, ":")
	switch kind {
	case "echo":
		ln, err := net.Listen("tcp", ":"+arg)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println("listening")
		for {
			c, err := ln.Accept()
			if err != nil {
				return 1
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	case "dial":
		c, err := net.DialTimeout("tcp", arg, 300*time.Millisecond)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		host, _ := os.Hostname()
		fmt.Fprintf(c, "hello from %s\n", host)
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Print(line)
		return 0
	case "inside":
		// Run from inside host h1: drive the bed from there, as a boot
		// script running cmd/testbed does.
		b, err := Open(arg)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		out, err := b.MustHost("h1").Shell(context.Background(), "hostname; cat /proc/self/mountinfo | grep -c ' /etc/hosts '")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Print(out)
		return 0
	case "bed":
		// Build a bed, start a process in it, and never tear it down.
		b, err := New(context.Background(), Options{Hosts: 1, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		p, err := b.MustHost("h1").Start(context.Background(), Spec{Path: "sleep", Args: []string{"1000"}})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println(b.Dir(), p.PID)
		select {}
	}
	fmt.Fprintln(os.Stderr, "unknown helper mode", mode)
	return 2
}

func helperSpec(mode string, m Mode, role string) Spec {
	exe, _ := os.Executable()
	// A race-enabled helper would sleep 1 s at exit (GORACE atexit_sleep_ms).
	return Spec{Path: exe, Env: []string{"HAVEN_TESTBED_HELPER=" + mode, "GORACE=atexit_sleep_ms=0"}, Mode: m, Role: role}
}

const echoPort = "7007"

// startEcho starts an echo server in h and waits until it listens.
func startEcho(t *testing.T, h *Host, m Mode, role string) *Process {
	t.Helper()
	pr, pw := io.Pipe()
	s := helperSpec("echo:"+echoPort, m, role)
	s.Stdout = pw
	p, err := h.Start(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	go func() { p.Wait(); pw.Close() }()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil || line != "listening\n" {
		t.Fatalf("echo server on %s: %q %v", h.Name, line, err)
	}
	go io.Copy(io.Discard, pr)
	return p
}

// dial reports whether from reaches to's echo server.
func dial(t *testing.T, from, to *Host) bool {
	t.Helper()
	_, err := from.Run(context.Background(), helperSpec("dial:"+to.Addr.String()+":"+echoPort, NetOnly, "dial"))
	return err == nil
}

// reaches is dial for a check that expects success: a loaded machine gets
// three tries. (A check that expects failure uses dial: load cannot make a
// dropped packet arrive.)
func reaches(t *testing.T, from, to *Host) bool {
	t.Helper()
	for range 3 {
		if dial(t, from, to) {
			return true
		}
	}
	return false
}

// eventually polls cond until it holds or 10 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestBedNetworkFaults(t *testing.T) {
	b := ForTest(t, Options{Hosts: 3})
	h1, h2, h3 := b.MustHost("h1"), b.MustHost("h2"), b.MustHost("h3")
	for _, h := range b.Hosts() {
		startEcho(t, h, FullHost, "echo")
	}
	for _, from := range b.Hosts() {
		for _, to := range b.Hosts() {
			if !reaches(t, from, to) {
				t.Fatalf("%s cannot reach %s", from.Name, to.Name)
			}
		}
	}

	if err := b.NetworkCut(t.Context(), "h1"); err != nil {
		t.Fatal(err)
	}
	if dial(t, h2, h1) || dial(t, h1, h3) {
		t.Fatal("h1 still reachable after NetworkCut")
	}
	if !reaches(t, h2, h3) {
		t.Fatal("h2 cannot reach h3 while only h1 is cut")
	}
	if err := b.NetworkRestore(t.Context(), "h1"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "h1 is reachable again", func() bool { return dial(t, h2, h1) && dial(t, h1, h3) })

	// An outage of h1 and h2 together: they reach nobody while it lasts,
	// and everyone again after it.
	done := make(chan error, 1)
	var took time.Duration
	go func() {
		var err error
		took, err = b.NetworkOutage(t.Context(), 2*time.Second, "h1", "h2")
		done <- err
	}()
	eventually(t, "h1 and h2 are cut off", func() bool { return h1.NetworkCut() && !dial(t, h3, h1) && !dial(t, h3, h2) })
	if _, err := b.NetworkOutage(t.Context(), time.Second, "h2"); err == nil {
		t.Error("an outage of h2, cut already, was accepted")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if took < 2*time.Second {
		t.Errorf("NetworkOutage(2s) reports %v", took)
	}
	if h1.NetworkCut() || h2.NetworkCut() {
		t.Error("hosts still marked cut after the outage")
	}
	eventually(t, "h1 and h2 are reachable again", func() bool { return dial(t, h3, h1) && dial(t, h1, h2) })

	if err := b.Partition(t.Context(), []string{"h1", "h2"}, []string{"h3"}); err != nil {
		t.Fatal(err)
	}
	if got := b.PartitionSpec(); got != "h1,h2/h3" {
		t.Errorf("PartitionSpec = %q", got)
	}
	if !reaches(t, h1, h2) || !reaches(t, h2, h1) {
		t.Fatal("h1 and h2 are in one group but cannot talk")
	}
	for _, pair := range [][2]*Host{{h1, h3}, {h3, h1}, {h2, h3}, {h3, h2}} {
		if dial(t, pair[0], pair[1]) {
			t.Fatalf("%s reaches %s across the partition", pair[0].Name, pair[1].Name)
		}
	}
	// A new partition replaces the old one.
	if err := b.Partition(t.Context(), []string{"h1"}, []string{"h2", "h3"}); err != nil {
		t.Fatal(err)
	}
	if !reaches(t, h2, h3) || dial(t, h1, h2) {
		t.Fatal("second partition did not replace the first")
	}
	if err := b.Heal(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, pair := range [][2]*Host{{h1, h3}, {h3, h2}, {h2, h1}} {
		if !reaches(t, pair[0], pair[1]) {
			t.Fatalf("%s cannot reach %s after Heal", pair[0].Name, pair[1].Name)
		}
	}
	if err := b.Partition(t.Context(), []string{"h1"}, []string{"h2"}); err == nil {
		t.Error("a partition leaving h3 out was accepted")
	}
}

func TestHostNamespaces(t *testing.T) {
	b := ForTest(t, Options{Hosts: 2})
	h1 := b.MustHost("h1")
	out, err := h1.Shell(t.Context(), `hostname; pwd; echo "$HAVEN_TESTBED_HOST $HAVEN_TESTBED_ADDR $HAVEN_TESTBED_SHARED"; test -d /sys/fs/cgroup && echo cgroup; getent hosts h2; ip -4 -br addr show eth0`)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"h1\n", h1.Dir + "\n", "h1 " + h1.Addr.String() + " " + b.SharedDir(), "cgroup\n", b.MustHost("h2").Addr.String() + " ", h1.Addr.String() + "/24"}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("FullHost output lacks %q:\n%s", w, out)
		}
	}
	// From inside the host, its commands run there directly.
	if o, err := h1.Run(t.Context(), helperSpec("inside:"+b.Dir(), FullHost, "")); err != nil || !strings.HasPrefix(string(o), "h1\n1\n") {
		t.Errorf("a command started from inside h1: %q, %v; want it in h1 (hostname h1, one /etc/hosts mount)", o, err)
	}
	// NetOnly keeps this machine's hostname and the given working dir.
	root, _ := os.Hostname()
	o, err := h1.Run(t.Context(), Spec{Path: "sh", Args: []string{"-c", "hostname; pwd; ip -4 -br addr show eth0"}, Mode: NetOnly, Dir: "/tmp", Env: []string{"X=1"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(o); !strings.HasPrefix(got, root+"\n/tmp\n") || !strings.Contains(got, h1.Addr.String()) {
		t.Errorf("NetOnly output: %q", got)
	}
	// A bind mount inside the host is the host's only.
	src := t.TempDir()
	os.WriteFile(src+"/marker", []byte("x"), 0o644)
	dst := h1.Dir + "/mnt"
	if err := h1.BindMount(t.Context(), src, dst); err != nil {
		t.Fatal(err)
	}
	if _, err := h1.Shell(t.Context(), "test -f "+dst+"/marker"); err != nil {
		t.Errorf("bind mount not visible inside the host: %v", err)
	}
	if _, err := os.Stat(dst + "/marker"); err == nil {
		t.Error("the host's bind mount leaked to this machine")
	}
	// A private dir: each host its own copy of one path.
	priv := t.TempDir() + "/etc-private"
	for _, h := range b.Hosts() {
		src, err := h.PrivateDir(t.Context(), priv)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(src+"/name", []byte(h.Name), 0o644)
	}
	for _, h := range b.Hosts() {
		if out, err := h.Shell(t.Context(), "cat "+priv+"/name"); err != nil || out != h.Name {
			t.Errorf("%s reads %q, %v from its private dir", h.Name, out, err)
		}
	}
	if _, err := os.Stat(priv + "/name"); err == nil {
		t.Error("a host's private dir leaked to this machine")
	}
	// The shared dir is the same directory in every host.
	if _, err := h1.Shell(t.Context(), "echo shared > $HAVEN_TESTBED_SHARED/f"); err != nil {
		t.Fatal(err)
	}
	if out, err := b.MustHost("h2").Shell(t.Context(), "cat $HAVEN_TESTBED_SHARED/f"); err != nil || out != "shared\n" {
		t.Errorf("h2 reads %q, %v from the shared dir", out, err)
	}
}

func TestPowerOffKillsExactlyTheHostsProcesses(t *testing.T) {
	b := ForTest(t, Options{Hosts: 3})
	h1, h2 := b.MustHost("h1"), b.MustHost("h2")
	agent1 := startEcho(t, h1, FullHost, RoleAgent)
	// A process tree (sh and two children) standing for a guest.
	guest1, err := h1.Start(t.Context(), Spec{Path: "sh", Args: []string{"-c", "sleep 1000 & sleep 1000 & wait"}, Role: "guest g1", Mode: NetOnly})
	if err != nil {
		t.Fatal(err)
	}
	agent2 := startEcho(t, h2, FullHost, RoleAgent)
	guest2, err := h2.Start(t.Context(), Spec{Path: "sleep", Args: []string{"1000"}, Role: "guest g2"})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "h1 runs 4 processes", func() bool { p, _ := h1.PIDs(); return len(p) == 4 })
	var powered []string
	b.SetHooks(Hooks{PowerOn: func(ctx context.Context, h *Host) error {
		powered = append(powered, h.Name)
		_, err := h.Start(ctx, helperSpec("echo:"+echoPort, FullHost, RoleAgent))
		return err
	}})

	if err := b.PowerOff(t.Context(), "h1"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*Process{agent1, guest1} {
		select {
		case <-p.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("%s on h1 survived PowerOff", p.Role)
		}
	}
	if p, _ := h1.PIDs(); len(p) != 0 {
		t.Errorf("processes left in h1 after PowerOff: %v", p)
	}
	if agent2.Exited() || guest2.Exited() {
		t.Fatal("PowerOff of h1 killed a process of h2")
	}
	if h1.PoweredOn() {
		t.Error("h1 reads as on after PowerOff")
	}
	if _, err := h1.Start(t.Context(), Spec{Path: "true"}); !errors.Is(err, ErrHostOff) {
		t.Errorf("Start on a powered-off host: %v, want ErrHostOff", err)
	}
	if dial(t, h2, h1) {
		t.Error("a powered-off host answers")
	}

	if err := b.PowerOn(t.Context(), "h1"); err != nil {
		t.Fatal(err)
	}
	if len(powered) != 1 || powered[0] != "h1" {
		t.Errorf("PowerOn hook ran for %v", powered)
	}
	eventually(t, "h1's restarted agent answers", func() bool { return dial(t, h2, h1) })

	// AgentKill kills the agent only.
	if err := b.AgentKill(t.Context(), "h2"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-agent2.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("agent of h2 survived AgentKill")
	}
	if guest2.Exited() {
		t.Error("AgentKill killed a guest")
	}
	if err := b.AgentKill(t.Context(), "h3"); err == nil {
		t.Error("AgentKill on a host without agent succeeded")
	}
}

func TestLegReachesHosts(t *testing.T) {
	b := ForTest(t, Options{Hosts: 2, Leg: true})
	h2 := b.MustHost("h2")
	startEcho(t, h2, FullHost, "echo")
	if err := b.CheckRoutes(t.Context()); err != nil {
		t.Fatal(err)
	}
	// From the root namespace, through the leg.
	c, err := net.DialTimeout("tcp", h2.Addr.String()+":"+echoPort, 2*time.Second)
	if err != nil {
		t.Fatalf("root namespace cannot reach h2 through the leg: %v", err)
	}
	c.Close()
	out, _ := exec.Command("ip", "route", "get", h2.Addr.String()).CombinedOutput()
	if !strings.Contains(string(out), "dev "+b.LegDev()) {
		t.Errorf("route to h2: %s", out)
	}
}

func TestTwoBedsAndTeardown(t *testing.T) {
	b1 := ForTest(t, Options{Hosts: 1})
	b2 := ForTest(t, Options{Hosts: 1})
	if b1.ID() == b2.ID() || b1.Subnet() == b2.Subnet() {
		t.Fatalf("two beds share id or subnet: %s %s", b1.ID(), b2.ID())
	}
	p, err := b2.MustHost("h1").Start(context.Background(), Spec{Path: "sleep", Args: []string{"1000"}})
	if err != nil {
		t.Fatal(err)
	}
	id, subnet := b2.ID(), b2.cfg.Subnet
	if err := b2.Destroy(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !p.Exited() {
		t.Error("Destroy left a process running")
	}
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), id+"-") {
			t.Errorf("namespace %s left after Destroy", e.Name())
		}
	}
	if out, _ := exec.Command("ip", "route", "show", subnet).Output(); len(out) != 0 {
		t.Errorf("route left after Destroy: %s", out)
	}
	if _, err := os.Stat(b2.Dir()); err == nil {
		t.Error("state dir left after Destroy")
	}
	// b1 is untouched.
	if _, err := os.Stat("/run/netns/" + b1.MustHost("h1").Netns); err != nil {
		t.Errorf("Destroy of %s touched %s: %v", id, b1.ID(), err)
	}
}

func TestReapStaleBed(t *testing.T) {
	ForTest(t, Options{Hosts: 1}) // skips without root
	exe, _ := os.Executable()
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), "HAVEN_TESTBED_HELPER=bed", "GORACE=atexit_sleep_ms=0")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var dir string
	var pid int
	if _, err := fmt.Fscan(bufio.NewReader(out), &dir, &pid); err != nil {
		cmd.Process.Kill()
		t.Fatalf("helper bed: %v", err)
	}
	stale, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	start, _ := procStart(pid)
	// The owner dies without tearing its bed down, as a test binary killed
	// by its timeout does.
	cmd.Process.Kill()
	cmd.Wait()
	if !processAlive(pid, start) {
		t.Fatal("the stale bed's process died with its owner; nothing to reap")
	}
	ReapStale(t.Context(), DefaultRoot, slog.Default())
	if processAlive(pid, start) {
		t.Error("reaping left the stale bed's process running")
	}
	if _, err := os.Stat("/run/netns/" + stale.MustHost("h1").Netns); err == nil {
		t.Error("reaping left the stale bed's namespace")
	}
	if _, err := os.Stat(dir); err == nil {
		t.Error("reaping left the stale bed's directory")
	}
}

// Without its unreachable route, a bed's addresses would go out through the
// default route: CheckRoutes must refuse. (`ip route get` sends nothing.)
func TestCheckRoutesRefusesLeakingBed(t *testing.T) {
	b := ForTest(t, Options{Hosts: 2})
	if err := b.CheckRoutes(t.Context()); err != nil {
		t.Fatal(err)
	}
	subnet := b.Subnet().String()
	if out, err := exec.Command("ip", "route", "del", "unreachable", subnet).CombinedOutput(); err != nil {
		t.Fatalf("remove the bed's route: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "route", "add", "unreachable", subnet).Run() })
	out, _ := exec.Command("ip", "route", "get", b.MustHost("h1").Addr.String()).CombinedOutput()
	err := b.CheckRoutes(t.Context())
	if viaDefault(string(out)) && !errors.Is(err, ErrRouteLeaves) {
		t.Fatalf("route %q accepted: %v", out, err)
	}
	if err != nil && !strings.Contains(err.Error(), "refusing") {
		t.Errorf("unclear refusal: %v", err)
	}
	t.Log(err)
}
