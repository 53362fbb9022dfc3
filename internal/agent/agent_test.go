package agent

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/store"
	"github.com/haven-ha/haven/internal/store/storetest"
)

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func TestValidNodeName(t *testing.T) {
	for name, ok := range map[string]bool{
		"n1": true, "host-1.lab": true, "a": true, "a_b": true,
		"": false, "N1": false, "-a": false, "a-": false, "a b": false, "a/b": false,
		strings.Repeat("a", 63): true, strings.Repeat("a", 64): false,
	} {
		if ValidNodeName(name) != ok {
			t.Errorf("ValidNodeName(%q) = %v", name, !ok)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	base := Config{Node: "n1", DataDir: "/tmp/x", Listen: "127.0.0.1:1", PeerListen: "127.0.0.1:2"}
	for _, tt := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"bad node", func(c *Config) { c.Node = "N 1" }, "not valid"},
		{"no dir", func(c *Config) { c.DataDir = "" }, "--data-dir"},
		{"root", func(c *Config) { c.Node, c.Init = "root", true }, "reserved"},
		{"init and join", func(c *Config) { c.Init, c.JoinAddr, c.JoinToken = true, "https://x:1", "t" }, "exclude"},
		{"join without token", func(c *Config) { c.JoinAddr = "https://x:1" }, "--token"},
		{"store members", func(c *Config) { c.StoreMembers = 4 }, "use 3 or 5"},
		{"short ttl", func(c *Config) { c.LeaseTTL = time.Second }, "minimum"},
		{"keepalive", func(c *Config) { c.LeaseTTL, c.KeepAlive = 5*time.Second, 6*time.Second }, "shorter"},
		{"listen", func(c *Config) { c.Listen = "nope" }, "--listen"},
		{"ttl below election floor", func(c *Config) { c.LeaseTTL, c.StoreElectionMs = 5*time.Second, 4000 }, "6s with a 4s election"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := base
			tt.mod(&c)
			_, err := New(c)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
	a, err := New(base)
	if err != nil {
		t.Fatal(err)
	}
	if a.cfg.StoreClientListen != "127.0.0.1:3" || a.cfg.LeaseTTL != store.DefaultLeaseTTL {
		t.Fatalf("defaults: %+v", a.cfg)
	}
}

func TestDataDirLockAndDiscard(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "d")
	d, err := openDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := openDataDir(dir); err == nil || !strings.Contains(err.Error(), "in use by another haven agent") {
		t.Fatalf("second lock: %v", err)
	}
	if err := writeFileAtomic(d.file("pki", "x"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	d.discard()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("discard left %s: %v", dir, err)
	}
}

// TestManagerHook runs a single-host cluster in process: the hook runs with
// a valid Leadership, its guarded writes work, and its context ends when
// the agent stops.
func TestManagerHook(t *testing.T) {
	dir := t.TempDir()
	a, err := New(Config{Node: "h1", DataDir: filepath.Join(dir, "h1"), Listen: freeAddr(t), PeerListen: freeAddr(t), StoreClientListen: freeAddr(t), Init: true, StoreMembers: 1})
	if err != nil {
		t.Fatal(err)
	}
	type term struct {
		ctx context.Context
		l   *store.Leadership
	}
	started := make(chan term, 1)
	a.OnManager("test", func(ctx context.Context, l *store.Leadership) error {
		if _, err := l.Do(ctx, clientv3.OpPut("/haven/test/hook", l.Node())); err != nil {
			t.Errorf("guarded write: %v", err)
		}
		started <- term{ctx, l}
		<-ctx.Done()
		return nil
	})
	ctx := context.Background()
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	var tm term
	select {
	case tm = <-started:
	case <-time.After(20 * time.Second):
		t.Fatal("hook did not run")
	}
	if tm.l.Node() != "h1" || !a.IsManager() || a.Node() != "h1" {
		t.Fatalf("leadership %q, manager %v", tm.l.Node(), a.IsManager())
	}
	resp, err := a.Store().Client().Get(ctx, "/haven/test/hook")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("hook write not in store: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "h1", "admin.token")); err != nil || !strings.HasPrefix(string(b), "hvt.") {
		t.Fatalf("admin token: %q %v", b, err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "h1", "admin.token")); fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin token mode %v", fi.Mode())
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	a.Stop(sctx)
	select {
	case <-tm.ctx.Done():
	default:
		t.Fatal("hook context still live after Stop")
	}
	if _, err := tm.l.Do(ctx, clientv3.OpPut("/haven/test/hook", "late")); err == nil {
		t.Fatal("write after the term ended succeeded")
	}
}

// TestTidyLearners: a learner whose host never came up is removed after
// learnerGrace, so it cannot block later joins.
func TestTidyLearners(t *testing.T) {
	srv := storetest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	}
	a := &Agent{st: srv.Store, now: clock, log: slog.Default(), learnerTick: 10 * time.Millisecond}
	id, _, err := srv.Store.AddLearner(ctx, "https://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	// A lease long enough not to lapse under -race on a loaded machine:
	// the loop ends with the leadership.
	l, err := srv.Store.Campaign(ctx, "m", 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.tidyLearners(ctx, l) }()
	hasLearner := func() bool {
		ms, err := srv.Store.Members(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			if m.ID == id {
				return true
			}
		}
		return false
	}
	// Within the grace period it stays.
	deadline := time.Now().Add(200 * time.Millisecond)
	for time.Now().Before(deadline) {
		if !hasLearner() {
			t.Fatal("learner removed within its grace period")
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
	// Past it, the learner goes. The clock moves on at every poll: on a
	// loaded machine the loop may first see the learner only after the
	// first move.
	deadline = time.Now().Add(30 * time.Second)
	for hasLearner() {
		if time.Now().After(deadline) {
			t.Fatal("stale learner not removed")
		}
		mu.Lock()
		now = now.Add(learnerGrace + time.Second)
		mu.Unlock()
		time.Sleep(20 * time.Millisecond) // poll interval
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// Issue 10, Medium 4: an agent does not adopt a data dir another user made
// (a /tmp/haven-dev planted before `haven agent --dev`).
func TestDataDirOfAnotherUserRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a directory owned by another user")
	}
	dir := filepath.Join(t.TempDir(), "haven-dev")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if _, err := openDataDir(dir); err == nil || !strings.Contains(err.Error(), "owned by uid 65534") {
		t.Fatalf("data dir of uid 65534: %v, want it refused", err)
	}
	os.Chown(dir, 0, 0)
	os.Chmod(dir, 0o777)
	if _, err := openDataDir(dir); err == nil || !strings.Contains(err.Error(), "writable by others") {
		t.Fatalf("world-writable data dir: %v, want it refused", err)
	}
}

// TestFenceAgentDirChecked: an agent refuses to start with a fence agent
// directory others can write to, or a relative one.
func TestFenceAgentDirChecked(t *testing.T) {
	open := filepath.Join(t.TempDir(), "agents")
	if err := os.Mkdir(open, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	base := Config{Node: "n1", DataDir: t.TempDir(), Listen: "127.0.0.1:0"}
	for dir, want := range map[string]string{open: "writable by others", "agents": "absolute path", filepath.Join(open, "missing"): "no such file"} {
		cfg := base
		cfg.FenceAgentDirs = []string{dir}
		if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("--fence-agent-dir %s: %v, want an error with %q", dir, err, want)
		}
	}
}
