package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/api"
)

// havenBin is the haven binary built once by TestMain.
var havenBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "haven-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	havenBin = filepath.Join(dir, "haven")
	args := []string{"build", "-o", havenBin}
	if os.Getenv("HAVEN_E2E_RACE") != "" {
		args = append(args, "-race") // agents with the race detector
	}
	cmd := exec.Command("go", append(args, "github.com/haven-ha/haven/cmd/haven")...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build haven:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// syncBuffer is a bytes.Buffer safe for a process writing and a test reading.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// agentProc is one `haven agent` process.
type agentProc struct {
	name   string
	dir    string
	listen string
	peer   string
	client string
	args   []string // extra flags of the first start (--init or --join ...)
	cmd    *exec.Cmd
	out    *syncBuffer
	errb   *syncBuffer
	exited chan struct{}
	err    error
}

// testCluster is a set of agents on 127.0.0.x addresses.
type testCluster struct {
	t       testing.TB
	base    string
	ipBase  int
	nodes   []*agentProc
	join    string // join token from the init node's output
	admin   string // admin token
	ca      string // CA file of the init node
	api     string // API URL of the init node
	flags   []string
	storeEP string // external store endpoints, if any
}

// newCluster prepares a cluster whose hosts use 127.0.0.ipBase+i.
func newCluster(t testing.TB, ipBase int, flags ...string) *testCluster {
	c := &testCluster{t: t, base: t.TempDir(), ipBase: ipBase, flags: flags}
	t.Cleanup(c.stopAll)
	return c
}

// freePort picks a port free on ip.
func freePort(t testing.TB, ip string) string {
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatalf("find a free port on %s: %v", ip, err)
	}
	defer l.Close()
	return l.Addr().String()
}

// addNode defines the next node (not started).
func (c *testCluster) addNode(name string) *agentProc {
	ip := fmt.Sprintf("127.0.0.%d", c.ipBase+len(c.nodes))
	n := &agentProc{name: name, dir: filepath.Join(c.base, name), listen: freePort(c.t, ip), peer: freePort(c.t, ip), client: freePort(c.t, ip)}
	c.nodes = append(c.nodes, n)
	return n
}

func (c *testCluster) argv(n *agentProc) []string {
	a := []string{"agent", "--node", n.name, "--data-dir", n.dir, "--listen", n.listen}
	if c.storeEP != "" {
		a = append(a, "--store-endpoints", c.storeEP)
	} else {
		a = append(a, "--peer-listen", n.peer, "--store-client-listen", n.client)
	}
	return append(append(a, c.flags...), n.args...)
}

// start runs the agent and waits until it is ready or exits.
func (c *testCluster) start(n *agentProc) error {
	c.t.Helper()
	n.cmd = exec.Command(havenBin, c.argv(n)...)
	n.out, n.errb = &syncBuffer{}, &syncBuffer{}
	n.cmd.Stdout, n.cmd.Stderr = n.out, n.errb
	if err := n.cmd.Start(); err != nil {
		return err
	}
	n.exited = make(chan struct{})
	go func() {
		n.err = n.cmd.Wait()
		close(n.exited)
	}()
	started := time.Now()
	deadline := time.After(60 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-n.exited:
			return fmt.Errorf("agent %s exited: %v\n%s", n.name, n.err, n.errb.String())
		case <-deadline:
			return fmt.Errorf("agent %s not ready within 60s:\n%s", n.name, n.errb.String())
		case <-tick.C:
			if strings.Contains(n.errb.String(), `msg="agent ready"`) {
				c.t.Logf("agent %s ready after %v", n.name, time.Since(started).Round(10*time.Millisecond))
				return nil
			}
		}
	}
}

// startNew starts a node for the first time. freePort's ports are free
// when it picks them, not necessarily when the agent binds them (tests of
// other packages run beside this one): an agent that finds one taken
// starts again from an empty data directory on new ports.
func (c *testCluster) startNew(n *agentProc) error {
	c.t.Helper()
	for try := 1; ; try++ {
		err := c.start(n)
		if err == nil || try == 3 || !strings.Contains(err.Error(), "address already in use") {
			return err
		}
		c.t.Logf("agent %s found a port taken (%v); again on new ports", n.name, strings.SplitN(err.Error(), "\n", 2)[0])
		if err := os.RemoveAll(n.dir); err != nil {
			return err
		}
		ip, _, _ := net.SplitHostPort(n.listen)
		n.listen, n.peer, n.client = freePort(c.t, ip), freePort(c.t, ip), freePort(c.t, ip)
	}
}

var (
	joinRE  = regexp.MustCompile(`--token (hvj\.\S+)`)
	adminRE = regexp.MustCompile(`(?m)^\s+(hvt\.\S+)$`)
)

// initNode starts the first node with --init and records the tokens.
func (c *testCluster) initNode(name string, extra ...string) *agentProc {
	c.t.Helper()
	n := c.addNode(name)
	n.args = append([]string{"--init"}, extra...)
	if err := c.startNew(n); err != nil {
		c.t.Fatal(err)
	}
	// The join command is printed right after ready.
	c.waitFor("init output", 10*time.Second, func() bool { return joinRE.MatchString(n.out.String()) })
	c.join = joinRE.FindStringSubmatch(n.out.String())[1]
	c.admin = adminRE.FindStringSubmatch(n.out.String())[1]
	c.ca = filepath.Join(n.dir, "pki", "ca.crt")
	c.api = "https://" + n.listen
	return n
}

// joinNode starts a node with --join to the node started before it, so
// that joins are answered by joined hosts too, not only the first.
func (c *testCluster) joinNode(name string) *agentProc {
	c.t.Helper()
	var prev *agentProc
	for _, m := range c.nodes {
		if m.running() {
			prev = m
		}
	}
	if prev == nil {
		c.t.Fatal("no running agent to join through")
	}
	n := c.addNode(name)
	n.args = []string{"--join", "https://" + prev.listen, "--token", c.join}
	if err := c.startNew(n); err != nil {
		c.t.Fatal(err)
	}
	return n
}

// running reports whether the node's process is up.
func (n *agentProc) running() bool {
	if n.exited == nil {
		return false
	}
	select {
	case <-n.exited:
		return false
	default:
		return true
	}
}

// restart starts a stopped node again with its data dir (no --init/--join).
func (c *testCluster) restart(n *agentProc) {
	c.t.Helper()
	n.args = nil
	if err := c.start(n); err != nil {
		c.t.Fatal(err)
	}
}

// kill9 kills a node's process with SIGKILL.
func (c *testCluster) kill9(n *agentProc) {
	c.t.Helper()
	if err := n.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		c.t.Fatalf("kill %s: %v", n.name, err)
	}
	<-n.exited
}

func (c *testCluster) stopAll() {
	var wg sync.WaitGroup
	for _, n := range c.nodes {
		if n.cmd == nil || n.exited == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-n.exited:
				if c.t.Failed() {
					c.t.Logf("agent %s had exited (%v); its last %d lines:\n%s", n.name, n.err, failedLogLines, lastLines(n.errb.String(), failedLogLines))
				}
				return
			default:
			}
			_ = n.cmd.Process.Signal(syscall.SIGTERM)
			t0 := time.Now()
			select {
			case <-n.exited:
				c.t.Logf("agent %s stopped in %v", n.name, time.Since(t0).Round(10*time.Millisecond))
				switch {
				case os.Getenv("HAVEN_E2E_LOGS") != "":
					c.t.Logf("agent %s log:\n%s", n.name, n.errb.String())
				case c.t.Failed():
					c.t.Logf("agent %s log, its last %d lines (HAVEN_E2E_LOGS=1 for all):\n%s", n.name, failedLogLines, lastLines(n.errb.String(), failedLogLines))
				}
			case <-time.After(15 * time.Second):
				c.t.Logf("agent %s did not stop in 15s; killing it:\n%s", n.name, n.errb.String())
				_ = n.cmd.Process.Kill()
				<-n.exited
			}
		}()
	}
	wg.Wait()
	for _, n := range c.nodes {
		if n.errb != nil && strings.Contains(n.errb.String(), "DATA RACE") {
			c.t.Errorf("agent %s had a data race:\n%s", n.name, n.errb.String())
		}
	}
}

// haven runs the CLI against the cluster through a given node's API.
func (c *testCluster) haven(via *agentProc, args ...string) (string, error) {
	cmd := exec.Command(havenBin, args...)
	cmd.Env = append(os.Environ(), "HAVEN_SERVER=https://"+via.listen, "HAVEN_TOKEN="+c.admin, "HAVEN_CACERT="+c.ca, "HAVEN_DATA_DIR="+filepath.Join(c.base, "none"))
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("haven %s: %v: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

// status runs `haven status -o json` through via.
func (c *testCluster) status(via *agentProc) (*api.Status, error) {
	out, err := c.haven(via, "status", "-o", "json")
	if err != nil {
		return nil, err
	}
	var st api.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, fmt.Errorf("decode status: %w: %s", err, out)
	}
	return &st, nil
}

// waitStatus polls status through via until cond holds or the deadline.
func (c *testCluster) waitStatus(via *agentProc, what string, d time.Duration, cond func(*api.Status) bool) *api.Status {
	c.t.Helper()
	deadline := time.Now().Add(d)
	var last *api.Status
	var lastErr error
	for time.Now().Before(deadline) {
		st, err := c.status(via)
		if err == nil && cond(st) {
			return st
		}
		last, lastErr = st, err
		time.Sleep(200 * time.Millisecond) // poll interval, not a wait for a condition
	}
	b, _ := json.MarshalIndent(last, "", "  ")
	c.t.Fatalf("%s: not within %v; last status %s, err %v", what, d, b, lastErr)
	return nil
}

func (c *testCluster) waitFor(what string, d time.Duration, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			c.t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
}

func hostState(st *api.Status, name string) string {
	for _, h := range st.Hosts {
		if h.Name == name {
			return h.State
		}
	}
	return "absent"
}

func host(st *api.Status, name string) *api.Host {
	for i := range st.Hosts {
		if st.Hosts[i].Name == name {
			return &st.Hosts[i]
		}
	}
	return nil
}

func allOnline(names ...string) func(*api.Status) bool {
	return func(st *api.Status) bool {
		for _, n := range names {
			if hostState(st, n) != api.HostOnline {
				return false
			}
		}
		return true
	}
}

func (c *testCluster) byName(name string) *agentProc {
	for _, n := range c.nodes {
		if n.name == name {
			return n
		}
	}
	c.t.Fatalf("no node %s", name)
	return nil
}

var _ = context.Background

// failedLogLines is how much of each agent's log a failed test shows.
const failedLogLines = 150

// lastLines is the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
