package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/api/apitest"
	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/pki"
	"github.com/haven-ha/haven/internal/storage"
)

// lockedBuffer is a bytes.Buffer safe for a command writing and a test
// reading.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// badToken is well formed but unknown to the cluster.
var badToken = pki.NewAPIToken().String()

// cliRun runs a haven command line against the test agent with the token
// of role, through HAVEN_SERVER, HAVEN_TOKEN and HAVEN_CACERT.
func cliRun(ctx context.Context, ag *apitest.Agent, role string, stdin string, args ...string) (code int, stdout, stderr string) {
	var out, errb lockedBuffer
	env := &Env{Stdout: &out, Stderr: &errb, Stdin: strings.NewReader(stdin), Getenv: func(k string) string {
		switch k {
		case "HAVEN_SERVER":
			return ag.URL()
		case "HAVEN_TOKEN":
			if role == "bad" {
				return badToken
			}
			return ag.Tokens[role]
		case "HAVEN_CACERT":
			return ag.CAFile
		case "HAVEN_DATA_DIR":
			return "/nonexistent"
		}
		return ""
	}}
	code = Run(ctx, env, args)
	return code, out.String(), errb.String()
}

// TestOperatorCLI runs the guest, domain, node, fence, policy and events
// commands against a real agent (embedded etcd, TLS API) started in this
// test. The manager loop is not part of it: apitest.PlayManager stands in
// for its command handling and marks every queued command done.
func TestOperatorCLI(t *testing.T) {
	ag, err := apitest.Start("n1", t.TempDir())
	if err != nil {
		t.Fatalf("start agent: %v", err)
	}
	defer ag.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	mctx, mcancel := context.WithCancel(ctx)
	wait := ag.PlayManager(mctx, func(cluster.Command) error { return nil })
	defer func() {
		mcancel()
		if err := wait(); err != nil {
			t.Error(err)
		}
	}()
	if err := ag.RegisterNode(ctx, "n2"); err != nil {
		t.Fatal(err)
	}
	// Every file a guest names must be in a storage pool: kernels in /boot,
	// imported disks in /guest_roots, and web1's disk in /var/lib/images,
	// which is declared shared later in the test (its first pool, "local",
	// is not shared).
	for _, p := range []storage.Pool{{Name: "boot", Path: "/boot"}, {Name: "roots", Path: "/guest_roots"}, {Name: "imgs", Path: "/images"}, {Name: "local", Path: "/var/lib/images"}} {
		if _, err := ag.Clients["admin"].CreatePool(ctx, p); err != nil {
			t.Fatal(err)
		}
	}

	run := func(t *testing.T, role string, args ...string) (int, string, string) {
		t.Helper()
		return cliRun(ctx, ag, role, "", args...)
	}
	ok := func(t *testing.T, args ...string) string {
		t.Helper()
		code, out, errs := run(t, "admin", args...)
		if code != 0 {
			t.Fatalf("haven %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
		}
		return out
	}
	fails := func(t *testing.T, role string, want int, wantErr string, args ...string) {
		t.Helper()
		code, out, errs := run(t, role, args...)
		if code != want || !strings.Contains(errs, wantErr) {
			t.Fatalf("haven %s: exit %d, stderr %q (stdout %q); want exit %d and %q", strings.Join(args, " "), code, errs, out, want, wantErr)
		}
	}

	t.Run("status with a frozen first server", func(t *testing.T) {
		// A host that just died may still accept connections and never
		// answer (or not answer to connect at all): status asks the next
		// server too after 250 ms instead of waiting for timeouts.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
			}
		}()
		ok(t, "status") // warm up: the agent's own first status
		start := time.Now()
		out := ok(t, "status", "--server", "https://"+ln.Addr().String()+","+ag.URL())
		took := time.Since(start)
		if !strings.Contains(out, "n1") {
			t.Fatalf("status said %q", out)
		}
		if took > 1500*time.Millisecond {
			t.Fatalf("status took %v with a frozen first server; want about 1 s at most", took)
		}
		t.Logf("status with a frozen first server: %v", took)
	})

	t.Run("usage errors", func(t *testing.T) {
		for _, args := range [][]string{
			{"guest", "show"},
			{"guest", "show", "a", "b"},
			{"guest", "migrate", "web1"},
			{"guest", "start", "web1", "n2"},
			{"guest", "create"},
			{"guest", "create", "x", "--memory", "lots"},
			{"guest", "create", "x", "--disk", "/a,colour=red"},
			{"guest", "create", "x", "--restart-window", "soon"},
			{"guest", "edit", "x"},
			{"guest", "import"},
			{"guest", "list", "-o", "yaml"},
			{"guest", "list", "--bogus"},
			{"domain", "create", "d1"},
			{"domain", "create", "d1", "--member", "n1:high"},
			{"node", "maintenance", "n1", "maybe"},
			{"node", "fence", "n2"},
			{"node", "confirm-off", "n2"},
			{"node", "confirm-off", "n1", "n2", "--yes"},
			{"fence", "test"},
			{"fence", "set", "-"},
			{"policy", "set"},
			{"events", "-n", "-3"},
			{"events", "extra"},
		} {
			code, _, errs := run(t, "admin", args...)
			if code != 2 || !strings.Contains(errs, "Usage: haven") {
				t.Errorf("haven %s: exit %d, stderr %q; want a usage error (exit 2)", strings.Join(args, " "), code, errs)
			}
		}
	})

	t.Run("guests", func(t *testing.T) {
		out := ok(t, "guest", "create", "web1", "--memory", "512MiB", "--vcpus", "2", "--state", "stopped",
			"--disk", "/var/lib/images/web1.img,format=raw", "--nic", "bridge=br0,mac=52:54:00:00:00:01", "--restart-window", "5m")
		if !strings.Contains(out, `guest "web1" created (512MiB, 2 vCPUs, desired state stopped)`) {
			t.Fatalf("create said %q", out)
		}
		out = ok(t, "guest", "list")
		if !strings.Contains(out, "web1") || !strings.Contains(out, "pending") || !strings.Contains(out, "512MiB") {
			t.Fatalf("list:\n%s", out)
		}
		var rows []api.GuestRow
		if err := json.Unmarshal([]byte(ok(t, "guest", "list", "-o", "json")), &rows); err != nil || len(rows) != 1 || rows[0].VCPUs != 2 {
			t.Fatalf("list -o json: %+v %v", rows, err)
		}
		out = ok(t, "guest", "show", "web1")
		for _, want := range []string{"Guest web1", "512MiB, 2 vCPUs", "/var/lib/images/web1.img (raw)", "bridge br0", "max 1 restarts in 5m0s", "created guest web1"} {
			if !strings.Contains(out, want) {
				t.Fatalf("show lacks %q:\n%s", want, out)
			}
		}
		var gi api.GuestInfo
		if err := json.Unmarshal([]byte(ok(t, "guest", "show", "web1", "-o", "json")), &gi); err != nil || gi.Spec.RestartWindow != 5*time.Minute {
			t.Fatalf("show -o json: %+v %v", gi, err)
		}
		ok(t, "guest", "edit", "web1", "--vcpus", "3", "--rev", itoa(gi.Rev))
		fails(t, "admin", 1, "(field rev)", "guest", "edit", "web1", "--vcpus", "4", "--rev", itoa(gi.Rev))
		var gp api.GuestInfo
		ok(t, "guest", "edit", "web1", "--priority", "700")
		if out := ok(t, "guest", "show", "web1"); !strings.Contains(out, "Priority:    700") {
			t.Fatalf("show after --priority 700:\n%s", out)
		}
		fails(t, "admin", 1, "(field priority)", "guest", "edit", "web1", "--priority", "1001")
		if err := json.Unmarshal([]byte(ok(t, "guest", "show", "web1", "-o", "json")), &gp); err != nil || gp.Spec.Priority != 700 {
			t.Fatalf("show -o json after --priority: %+v %v", gp.Spec, err)
		}
		fails(t, "admin", 1, "(field name)", "guest", "create", "web1", "--kernel", "/boot/k")
		fails(t, "admin", 1, "(field domain)", "guest", "create", "web2", "--domain", "nodomain", "--kernel", "/boot/k")
		fails(t, "admin", 1, "no guest named", "guest", "show", "nosuch")
		fails(t, "viewer", 1, `has role "viewer"`, "guest", "create", "web3")
		fails(t, "bad", 1, "unknown or revoked token", "guest", "list")
		// A JSON form, with flags over it.
		form := filepath.Join(t.TempDir(), "db1.json")
		if err := os.WriteFile(form, []byte(`{"name":"db1","memory":"1GiB","state":"stopped","migratable":false,"boot":{"kernel":"/boot/k"}}`), 0o644); err != nil {
			t.Fatal(err)
		}
		ok(t, "guest", "create", "-f", form, "--vcpus", "4")
		if out := ok(t, "guest", "show", "db1"); !strings.Contains(out, "1GiB, 4 vCPUs") || !strings.Contains(out, "not migratable") {
			t.Fatalf("db1:\n%s", out)
		}
		// Import: a Xen config as Cluster Suite kept it in /etc/xen, and a
		// libvirt XML on stdin.
		xen := filepath.Join(t.TempDir(), "guest1")
		if err := os.WriteFile(xen, []byte("name = \"guest1\"\nmemory = 512\nvcpus = 1\ndisk = [ 'file:/guest_roots/guest1.img,xvda,w' ]\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if out := ok(t, "guest", "import", xen, "--state", "stopped"); !strings.Contains(out, `guest "guest1" imported from `+xen+` (512MiB, 1 vCPUs, 1 disks, desired state stopped)`) {
			t.Fatalf("import said %q", out)
		}
		lv := "<domain type='kvm'><name>lv1</name><memory unit='MiB'>256</memory><vcpu>2</vcpu><os><type>hvm</type></os>" +
			"<devices><disk type='file' device='disk'><source file='/images/lv1.img'/><target dev='vda' bus='virtio'/></disk></devices></domain>"
		code, out, errs := cliRun(ctx, ag, "admin", lv, "guest", "import", "-", "--name", "lv2", "--state", "disabled")
		if code != 0 || !strings.Contains(out, `guest "lv2" imported from - (256MiB, 2 vCPUs, 1 disks, desired state disabled)`) {
			t.Fatalf("import from stdin: %d %q %q", code, out, errs)
		}
		fails(t, "admin", 1, "(field config)", "guest", "import", form, "--format", "libvirt")
		ok(t, "guest", "delete", "guest1")
		ok(t, "guest", "delete", "lv2")
	})

	t.Run("guest commands", func(t *testing.T) {
		// This test's stand-in manager accepts commands but runs no guest:
		// --wait 0 waits only for the acceptance (TestWaitForOutcome
		// waits for outcomes).
		out := ok(t, "guest", "start", "web1", "--wait", "0")
		if !strings.Contains(out, "start web1: accepted by the manager") {
			t.Fatalf("start said %q", out)
		}
		// Its disk is on no shared pool: it cannot move until the storage
		// it is on is declared shared.
		fails(t, "admin", 1, "cannot run on another host", "guest", "migrate", "web1", "n2")
		ok(t, "pool", "add", "images", "--path", "/var/lib/images", "--shared")
		var res api.CommandResult
		if err := json.Unmarshal([]byte(ok(t, "guest", "migrate", "web1", "n2", "-o", "json", "--wait=0")), &res); err != nil || !res.Done || res.Node != "n2" {
			t.Fatalf("migrate -o json: %+v %v", res, err)
		}
		ok(t, "guest", "relocate", "web1", "n1", "--wait=0")
		// Bulk: every guest a pattern or a host selects.
		if out := ok(t, "guest", "start", "--select", "web*", "--wait=0"); !strings.Contains(out, `start 1 guests named "web*": web1`) || !strings.Contains(out, "start web1: accepted") {
			t.Fatalf("bulk start said %q", out)
		}
		fails(t, "admin", 1, `no guest named "zz*"`, "guest", "start", "--select", "zz*")
		fails(t, "admin", 2, "give no guest name with --select", "guest", "start", "web1", "--select", "w*")
		fails(t, "admin", 2, "--select \"[\"", "guest", "start", "--select", "[")
		// Tags: set on edit, listed, filtered, and selecting a bulk action.
		ok(t, "guest", "edit", "web1", "--tag", "prod", "--tag", "web")
		if out := ok(t, "guest", "list", "--tag", "web"); !strings.Contains(out, "web1") || strings.Contains(out, "db1") || !strings.Contains(out, "prod,web") {
			t.Fatalf("list --tag web:\n%s", out)
		}
		if out := ok(t, "guest", "list", "--tag", "nosuch"); strings.Contains(out, "web1") {
			t.Fatalf("list --tag nosuch:\n%s", out)
		}
		if out := ok(t, "guest", "show", "web1"); !strings.Contains(out, "Tags:        prod, web") {
			t.Fatalf("show lacks the tags:\n%s", out)
		}
		if out := ok(t, "guest", "start", "--tag", "prod", "--wait=0"); !strings.Contains(out, `start 1 guests tagged "prod": web1`) {
			t.Fatalf("bulk start --tag said %q", out)
		}
		fails(t, "admin", 2, `--tag "Bad"`, "guest", "start", "--tag", "Bad")
		fails(t, "admin", 2, `--tag "a b"`, "guest", "edit", "web1", "--tag", "a b")
		fails(t, "admin", 2, "not both", "guest", "edit", "web1", "--tag", "x", "--no-tags")
		ok(t, "guest", "edit", "web1", "--no-tags")
		if out := ok(t, "guest", "list", "--tag", "prod"); strings.Contains(out, "web1") {
			t.Fatalf("after --no-tags, list --tag prod:\n%s", out)
		}
		fails(t, "admin", 1, "(field node)", "guest", "migrate", "web1", "nonode")
		fails(t, "admin", 1, "(field name)", "guest", "delete", "web1") // desired started
		ok(t, "guest", "stop", "web1", "--wait=0")
		ok(t, "guest", "disable", "db1", "--wait=0")
		ok(t, "guest", "delete", "web1")
		fails(t, "admin", 1, "(field name)", "guest", "stop", "web1")
		fails(t, "viewer", 1, "needs \"operator\"", "guest", "start", "db1")
	})

	t.Run("domains", func(t *testing.T) {
		out := ok(t, "domain", "create", "d1", "--member", "n1:2", "--member", "n2:1", "--restricted")
		if !strings.Contains(out, `failover domain "d1" created: n1:2,n2:1 (restricted)`) {
			t.Fatalf("create said %q", out)
		}
		ok(t, "domain", "create", "d2", "--member", "n2,n1", "--ordered", "--nofailback")
		if out := ok(t, "domain", "list"); !strings.Contains(out, "n2 > n1") || !strings.Contains(out, "ordered,nofailback") {
			t.Fatalf("list:\n%s", out)
		}
		ok(t, "guest", "create", "app1", "--domain", "d1", "--state", "stopped", "--kernel", "/boot/k")
		if out := ok(t, "domain", "show", "d1"); !strings.Contains(out, "Guests:      app1") {
			t.Fatalf("show:\n%s", out)
		}
		fails(t, "admin", 1, "(field members[0].node)", "domain", "create", "d3", "--member", "ghost")
		fails(t, "admin", 1, "(field name)", "domain", "delete", "d1")
		fails(t, "operator", 1, `needs "admin"`, "domain", "delete", "d2")
		ok(t, "guest", "delete", "app1")
		ok(t, "domain", "delete", "d1")
		fails(t, "admin", 1, "no failover domain", "domain", "show", "d1")
	})

	t.Run("maintenance", func(t *testing.T) {
		if out := ok(t, "node", "maintenance", "n1", "on", "--wait=0"); !strings.Contains(out, "maintenance n1 on: accepted") {
			t.Fatalf("maintenance said %q", out)
		}
		ok(t, "node", "maintenance", "n1", "off", "-o", "json", "--wait=0")
		fails(t, "admin", 1, "(field name)", "node", "maintenance", "ghost", "on")
	})

	t.Run("fence and policy", func(t *testing.T) {
		spy, err := filepath.Abs("../fence/testdata/fence_spy")
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		state := filepath.Join(dir, "power")
		cfg := filepath.Join(dir, "fence.yaml")
		if err := os.WriteFile(cfg, []byte(`devices:
  - name: pdu1
    agent: `+spy+`
    params: {ip: 192.0.2.1, password: hunter2, state_file: `+state+`}
    plugs: {n1: "1", n2: "2"}
    timeout: 10s
levels:
  n2:
    - devices: [pdu1]
`), 0o644); err != nil {
			t.Fatal(err)
		}
		if out := ok(t, "fence", "set", cfg); !strings.Contains(out, "1 devices, levels for 1 nodes") {
			t.Fatalf("set said %q", out)
		}
		out := ok(t, "fence", "show")
		if strings.Contains(out, "hunter2") || !strings.Contains(out, "password=********") || !strings.Contains(out, "n2    1      pdu1") {
			t.Fatalf("show:\n%s", out)
		}
		if out := ok(t, "fence", "show", "-o", "json"); strings.Contains(out, "hunter2") {
			t.Fatalf("show -o json leaks the secret:\n%s", out)
		}
		// Setting back what show printed keeps the secret.
		back := filepath.Join(dir, "back.json")
		if err := os.WriteFile(back, []byte(ok(t, "fence", "show", "-o", "json")), 0o644); err != nil {
			t.Fatal(err)
		}
		ok(t, "fence", "set", back)
		if out := ok(t, "fence", "test", "n2"); !strings.Contains(out, "every fence device of n2 answered") || !strings.Contains(out, "on") {
			t.Fatalf("test said %q", out)
		}
		fails(t, "admin", 1, "(field node)", "fence", "test", "ghost")
		if out := ok(t, "node", "fence", "n2", "--yes"); !strings.Contains(out, "node n2 fenced: powered off by level 1 (pdu1), confirmed off") {
			t.Fatalf("fence said %q", out)
		}
		fails(t, "admin", 1, "(field name)", "node", "fence", "n1", "--yes")
		// A wrong name is said before any --yes is asked for.
		fails(t, "admin", 1, `no node named "h9" in this cluster (its nodes: n1, n2)`, "node", "fence", "h9")
		fails(t, "admin", 1, `no node named "h9"`, "node", "confirm-off", "h9")
		fails(t, "operator", 1, `needs "admin"`, "node", "fence", "n2", "--yes")
		// The command reaches the manager (this test's stand-in accepts it;
		// the real manager's checks are tested in internal/api and the
		// failover tests).
		if out := ok(t, "node", "confirm-off", "n2", "--yes"); !strings.Contains(out, "confirm off n2: accepted") {
			t.Fatalf("confirm-off said %q", out)
		}
		fails(t, "operator", 1, `needs "admin"`, "node", "confirm-off", "n1", "--yes")
		bad := filepath.Join(dir, "bad.yaml")
		os.WriteFile(bad, []byte("levels: {n2: [{devices: [nodev]}]}\n"), 0o644)
		fails(t, "admin", 1, "(field levels)", "fence", "set", bad)

		if out := ok(t, "policy", "show"); !strings.Contains(out, "Fencing:         agent") {
			t.Fatalf("policy show:\n%s", out)
		}
		if out := ok(t, "policy", "set", "--shutdown-policy", "stop"); !strings.Contains(out, "shutdown policy stop") {
			t.Fatalf("policy set said %q", out)
		}
		fails(t, "admin", 1, "(field fencing)", "policy", "set", "--fencing", "prayer")
		if out := ok(t, "policy", "show"); !strings.Contains(out, "Quorum loss:     stop") || !strings.Contains(out, "Preemption:      off") {
			t.Fatalf("policy show lacks the defaults of quorum loss and preemption:\n%s", out)
		}
		if out := ok(t, "policy", "set", "--quorum-loss", "freeze", "--preemption", "on"); !strings.Contains(out, "quorum loss freeze, preemption on") {
			t.Fatalf("policy set said %q", out)
		}
		fails(t, "admin", 1, "(field quorum_loss)", "policy", "set", "--fencing", "watchdog")
		fails(t, "admin", 1, "(field quorum_loss)", "policy", "set", "--quorum-loss", "panic")
		fails(t, "admin", 2, "give on or off", "policy", "set", "--preemption", "maybe")
		ok(t, "policy", "set", "--quorum-loss", "stop", "--preemption", "off")

		// Admission control, start order and affinity rules.
		ok(t, "policy", "set", "--reserve", "hosts 1")
		if out := ok(t, "policy", "show"); !strings.Contains(out, "Admission:       reserve: hosts 1") || !strings.Contains(out, "Affinity rules:  none") {
			t.Fatalf("policy show:\n%s", out)
		}
		fails(t, "admin", 2, "give off", "policy", "set", "--reserve", "lots")
		ok(t, "guest", "create", "app1", "--state", "stopped", "--kernel", "/boot/vmlinuz")
		ok(t, "guest", "create", "app2", "--state", "stopped", "--after", "app1", "--kernel", "/boot/vmlinuz")
		if out := ok(t, "guest", "show", "app2"); !strings.Contains(out, "Starts after: app1") {
			t.Fatalf("guest show app2:\n%s", out)
		}
		hform := filepath.Join(dir, "health.json")
		os.WriteFile(hform, []byte(`{"name": "app4", "state": "stopped", "boot": {"kernel": "/boot/vmlinuz"}, "guest_agent": true,
			"health": [{"http": "http://guest:8080/health", "interval": "5s", "failures": 2}]}`), 0o644)
		ok(t, "guest", "create", "-f", hform)
		if out := ok(t, "guest", "show", "app4"); !strings.Contains(out, "Guest agent: yes") ||
			!strings.Contains(out, "Health:      http: http http://guest:8080/health → 200 (every 5s, timeout 5s, 2 failures, grace 1m0s)") {
			t.Fatalf("guest show app4:\n%s", out)
		}
		fails(t, "admin", 1, "health[0].tcp", "guest", "create", "-f", writeFile(t, dir, "bad-health.json", `{"name": "app5", "state": "stopped", "boot": {"kernel": "/boot/vmlinuz"}, "health": [{"tcp": 99999}]}`))
		fails(t, "admin", 1, "(field after)", "guest", "edit", "app1", "--after", "app2")
		fails(t, "admin", 1, "(field after)", "guest", "create", "app3", "--after", "nosuch", "--kernel", "/boot/vmlinuz")
		fails(t, "admin", 1, "(field rules)", "policy", "rule", "add", "r1", "--kind", "apart", "--guests", "app1,ghost")
		fails(t, "admin", 2, "at least 2 guests", "policy", "rule", "add", "r1", "--kind", "apart", "--guests", "app1")
		if out := ok(t, "policy", "rule", "add", "r1", "--kind", "apart", "--guests", "app1,app2"); !strings.Contains(out, "r1: hard apart app1,app2") {
			t.Fatalf("rule add said %q", out)
		}
		if out := ok(t, "policy", "rule", "add", "r2", "--kind", "on", "--guests", "app2", "--hosts", "n1", "--soft"); !strings.Contains(out, "r2: soft on app2 hosts n1") {
			t.Fatalf("rule add said %q", out)
		}
		ok(t, "policy", "rule", "delete", "r1")
		ok(t, "policy", "rule", "delete", "r2")
		fails(t, "admin", 1, "no rule named", "policy", "rule", "delete", "r1")
		ok(t, "guest", "delete", "app2")
		ok(t, "guest", "delete", "app1")
		ok(t, "policy", "set", "--reserve", "off")
		ok(t, "policy", "set", "--balance", "auto", "--balance-threshold", "15")
		if out := ok(t, "policy", "show"); !strings.Contains(out, "Rebalancing:     auto, threshold 15 points, 1 move(s) at once, cool-down 10m0s") {
			t.Fatalf("policy show:\n%s", out)
		}
		fails(t, "admin", 2, "give off, manual or auto", "policy", "set", "--balance", "sometimes")
		ok(t, "policy", "set", "--balance", "off")
	})

	t.Run("events", func(t *testing.T) {
		out := ok(t, "events", "-n", "50")
		for _, want := range []string{"operator", "created guest web1", "by init admin (n1)", "node n2"} {
			if !strings.Contains(out, want) {
				t.Fatalf("events lack %q:\n%s", want, out)
			}
		}
		var evs []cluster.Event
		if err := json.Unmarshal([]byte(ok(t, "events", "-n", "3", "-o", "json")), &evs); err != nil || len(evs) != 3 {
			t.Fatalf("events -o json: %d %v", len(evs), err)
		}
		if out := ok(t, "events", "--guest", "db1"); strings.Contains(out, "web1") || !strings.Contains(out, "db1") {
			t.Fatalf("events --guest db1:\n%s", out)
		}
		// Follow: a new event shows up while the command runs.
		fctx, fcancel := context.WithCancel(ctx)
		defer fcancel()
		var stdout, stderr lockedBuffer
		env := &Env{Stdout: &stdout, Stderr: &stderr, Stdin: strings.NewReader(""), Getenv: func(k string) string {
			return map[string]string{"HAVEN_SERVER": ag.URL(), "HAVEN_TOKEN": ag.Tokens["viewer"], "HAVEN_CACERT": ag.CAFile}[k]
		}}
		done := make(chan int, 1)
		go func() { done <- Run(fctx, env, []string{"events", "-f", "-n", "0", "-o", "json"}) }()
		deadline := time.Now().Add(30 * time.Second)
		for i := 0; !strings.Contains(stdout.String(), `"follow-me"`); i++ {
			if time.Now().After(deadline) {
				t.Fatalf("events -f showed nothing: %q %q", stdout.String(), stderr.String())
			}
			if err := ag.Cluster.AddEvent(ctx, cluster.Event{Kind: "guest", Guest: "follow-me", Msg: "ping"}); err != nil {
				t.Fatal(err)
			}
			select {
			case code := <-done:
				t.Fatalf("events -f ended with %d: %s", code, stderr.String())
			case <-time.After(200 * time.Millisecond):
			}
		}
		fcancel()
		if code := <-done; code != 0 {
			t.Fatalf("events -f after Ctrl-C: exit %d %s", code, stderr.String())
		}
	})
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// startAgent starts a one-host test agent, stopped when the test ends, and
// a context for the test's calls to it (a minute).
func startAgent(t *testing.T) (*apitest.Agent, context.Context) {
	t.Helper()
	ag, err := apitest.Start("n1", t.TempDir())
	if err != nil {
		t.Fatalf("start agent: %v", err)
	}
	t.Cleanup(ag.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ag, ctx
}
