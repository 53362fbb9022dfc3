// Package controlplane measures the real control plane at scale: a real
// etcd (embedded, or three etcd processes on loopback), the real manager
// (control.RunManager in a process of its own, killed with SIGKILL for the
// failover figure) and N simulated hosts running the real host side
// (hostagent: order watch, hostctl, report publisher, liveness lease) over
// an honest in-memory hypervisor. It measures, after a host is lost, the
// time from its fence result to every one of its guests ordered to start
// elsewhere and to all of them reported running; then the time a standby
// manager needs to load the state and act after the manager is killed.
//
//	go test ./test/controlplane -run TestControlPlane -v -cp.hosts 64 -cp.guests 8000
//	scripts/bench-controlplane.sh      (the issue's three sizes, figures printed)
package controlplane

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/control"
	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/hostagent"
	"github.com/haven-ha/haven/internal/hostctl"
	"github.com/haven-ha/haven/internal/hypervisor"
	"github.com/haven-ha/haven/internal/manager"
	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/pki"
	"github.com/haven-ha/haven/internal/savedstate"
	"github.com/haven-ha/haven/internal/store"
	"github.com/haven-ha/haven/internal/version"
)

var (
	nHosts     = flag.Int("cp.hosts", 8, "simulated hosts")
	nGuests    = flag.Int("cp.guests", 200, "guests, spread evenly over the hosts")
	external   = flag.Bool("cp.external", false, "run against three etcd processes on loopback instead of an embedded etcd")
	shm        = flag.Bool("cp.shm", false, "keep the external etcd members' data in /dev/shm (three members' fsyncs on one disk otherwise dominate)")
	doFailover = flag.Bool("cp.failover", true, "also kill the manager and measure the standby's takeover")
	targets    = flag.String("cp.targets", "", "fail unless the figures meet ORDERED,RUNNING[,ACTING] (durations, e.g. 1s,3s,3s)")
	perClient  = flag.Int("cp.hosts-per-client", 16, "simulated hosts sharing one store client")
	mgrTTL     = flag.Duration("cp.manager-ttl", 3*time.Second, "the manager's election lease TTL")
	leaseTTL   = flag.Duration("cp.lease-ttl", manager.DefaultTimings().LeaseTTL, "the hosts' liveness lease TTL (haven agent --lease-ttl)")
	etcdTick   = flag.Duration("cp.etcd-heartbeat", 100*time.Millisecond, "the external etcd members' heartbeat interval; their election timeout is 10 times it")
	keepalive  = flag.Duration("cp.keepalive", manager.DefaultTimings().Keepalive, "the hosts' lease renewal interval (haven agent --keepalive)")
	profDir    = flag.String("cp.profile", "", "write CPU profiles of the manager (manager.cpu) and of the hosts' process (hosts.cpu) over the host loss, from the loss to the last guest reported running, to this directory, and print every process's CPU time over it")
)

const benchPrefix = "/bench/"

func TestMain(m *testing.M) {
	if os.Getenv("HAVEN_CP_MANAGER") != "" {
		os.Exit(managerProcess())
	}
	flag.Parse()
	os.Exit(m.Run())
}

// managerProcess is one manager: it campaigns and runs terms until killed.
func managerProcess() int {
	node := os.Getenv("HAVEN_CP_MANAGER")
	ttl, _ := time.ParseDuration(os.Getenv("HAVEN_CP_TTL"))
	timings := manager.DefaultTimings()
	timings.LeaseTTL, _ = time.ParseDuration(os.Getenv("HAVEN_CP_LEASE_TTL"))
	timings.Keepalive, _ = time.ParseDuration(os.Getenv("HAVEN_CP_KEEPALIVE"))
	ctx := context.Background()
	// Warnings and errors, and the takeover's timings (logged at info);
	// the moment the term's first step was carried out and saved is
	// recorded for the measurement.
	var cli *clientv3.Client
	var stopProfile func()
	acting := func(at time.Time) {
		if cli != nil {
			_, _ = cli.Put(ctx, benchPrefix+"acting/"+node, strconv.FormatInt(at.UnixNano(), 10))
		}
		if stopProfile != nil {
			stopProfile()
			stopProfile = nil
		}
	}
	log := slog.New(timingsHandler{slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}), acting})
	if dir := os.Getenv("HAVEN_CP_PROFILE"); dir != "" {
		go profileOnSignal(filepath.Join(dir, "manager.cpu"))
	}
	cfg, err := clientConfig(os.Getenv("HAVEN_CP_ENDPOINTS"), os.Getenv("HAVEN_CP_TLS"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	st, err := store.Connect(ctx, cfg, nil, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cli = st.Client()
	for {
		l, err := st.Campaign(ctx, node, ttl)
		if err != nil {
			log.Warn("campaign", "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if dir := os.Getenv("HAVEN_CP_PROFILE"); dir != "" {
			// The takeover's profile, up to the first step carried out.
			stopProfile = profileFile(filepath.Join(dir, node+"-takeover.cpu"))
		}
		won, _ := json.Marshal(map[string]int64{"at": time.Now().UnixNano(), "rev": l.Rev(), "pid": int64(os.Getpid())})
		if _, err := cli.Put(ctx, benchPrefix+"won/"+node, string(won)); err != nil {
			log.Warn("record win", "err", err)
		}
		err = control.RunManager(l.Context(), control.Daemon{
			Cluster: cluster.New(st), Leader: l, Timings: timings, Logger: log,
			Fencer: fencer{cli: cli},
		})
		log.Warn("term ended", "err", err)
		l.Close()
	}
}

// fencer stands in for the fence devices: it confirms at once and records
// the moment of its result for the measurement.
type fencer struct{ cli *clientv3.Client }

func (f fencer) Fence(ctx context.Context, node string) error {
	_, err := f.cli.Put(ctx, benchPrefix+"fenced/"+node, strconv.FormatInt(time.Now().UnixNano(), 10))
	return err
}

func clientConfig(endpoints, tlsDir string) (store.ClientConfig, error) {
	cfg := store.ClientConfig{Endpoints: strings.Split(endpoints, ",")}
	if tlsDir == "" {
		return cfg, nil
	}
	var files [3][]byte
	for i, f := range []string{"ca.crt", "node.crt", "node.key"} {
		b, err := os.ReadFile(filepath.Join(tlsDir, f))
		if err != nil {
			return cfg, err
		}
		files[i] = b
	}
	t, err := pki.ClientTLS(files[0], files[1], files[2])
	cfg.TLS = t
	return cfg, err
}

func freePort(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startEmbedded starts an embedded etcd member with TLS, as an agent does.
func startEmbedded(t *testing.T) (endpoints, tlsDir string) {
	dir := t.TempDir()
	now := time.Now()
	ca, err := pki.NewCA("bench", now)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.IssueNode("bench", []string{"127.0.0.1", "localhost"}, now)
	if err != nil {
		t.Fatal(err)
	}
	for f, b := range map[string][]byte{"ca.crt": ca.CertPEM, "node.crt": cert, "node.key": key} {
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	client := "https://" + freePort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := store.StartEmbedded(ctx, store.EmbeddedConfig{
		Name: "bench", Dir: filepath.Join(dir, "etcd"), PeerURL: "https://" + freePort(t), ClientURL: client,
		CAFile: filepath.Join(dir, "ca.crt"), CertFile: filepath.Join(dir, "node.crt"), KeyFile: filepath.Join(dir, "node.key"),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return client, dir
}

// startExternal starts a three-member etcd cluster of etcd processes on
// loopback (plain HTTP) and returns its client endpoints.
func startExternal(t *testing.T) (string, []int) {
	bin, err := exec.LookPath("etcd")
	if err != nil {
		t.Skip("etcd is not installed (scripts/deps.sh installs it)")
	}
	dir := t.TempDir()
	if *shm {
		d, err := os.MkdirTemp("/dev/shm", "haven-bench-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		dir = d
	}
	var peers, clients, initial []string
	var pids []int
	for i := 0; i < 3; i++ {
		peers = append(peers, "http://"+freePort(t))
		clients = append(clients, "http://"+freePort(t))
		initial = append(initial, fmt.Sprintf("e%d=%s", i, peers[i]))
	}
	for i := 0; i < 3; i++ {
		cmd := exec.Command(bin, "--name", fmt.Sprintf("e%d", i), "--data-dir", filepath.Join(dir, fmt.Sprintf("e%d", i)),
			"--listen-peer-urls", peers[i], "--initial-advertise-peer-urls", peers[i],
			"--listen-client-urls", clients[i], "--advertise-client-urls", clients[i],
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new", "--initial-cluster-token", "bench",
			"--heartbeat-interval", strconv.FormatInt(etcdTick.Milliseconds(), 10), "--election-timeout", strconv.FormatInt(10*etcdTick.Milliseconds(), 10), "--quota-backend-bytes", strconv.Itoa(2<<30),
			"--auto-compaction-mode", "periodic", "--auto-compaction-retention", "1h", "--log-level", "warn")
		logf, err := os.Create(filepath.Join(dir, fmt.Sprintf("e%d.log", i)))
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pids = append(pids, cmd.Process.Pid)
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			logf.Close()
			if t.Failed() {
				b, _ := os.ReadFile(logf.Name())
				t.Logf("%s:\n%s", logf.Name(), tail(string(b), 3000))
			}
		})
	}
	return strings.Join(clients, ","), pids
}

type host struct {
	name   string
	hv     *fakeHV
	live   *store.Liveness
	cancel context.CancelFunc
	done   chan struct{}
}

func guestName(i int) string { return fmt.Sprintf("g%06d", i) }
func hostName(i int) string  { return fmt.Sprintf("h%04d", i) }

func TestControlPlane(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd, a manager process and simulated hosts")
	}
	H, G := *nHosts, *nGuests
	if H < 2 || G < H {
		t.Fatalf("-cp.hosts %d -cp.guests %d: need at least 2 hosts and a guest per host", H, G)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var endpoints, tlsDir string
	kind := "embedded etcd"
	var etcdPids []int
	if *external {
		endpoints, etcdPids = startExternal(t)
		kind = "3 etcd processes"
	} else {
		endpoints, tlsDir = startEmbedded(t)
	}
	cfg, err := clientConfig(endpoints, tlsDir)
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	connect := func() *store.Store {
		cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
		defer ccancel()
		st, err := store.Connect(cctx, cfg, nil, quiet)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	admin := connect()
	cli := admin.Client()

	// Counting the reports and reading the saved state walk every guest:
	// at 50,000 guests, polled every 50 ms, they would load the store more
	// than the hosts do.
	heavyPoll := 50 * time.Millisecond
	if G > 10000 {
		heavyPoll = 500 * time.Millisecond
	}

	// The cluster's records: hosts registered, guests under control.
	t0 := time.Now()
	perHost := (G + H - 1) / H
	var ops []clientv3.Op
	flush := func() {
		if len(ops) == 0 {
			return
		}
		if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
		ops = ops[:0]
	}
	for i := 0; i < H; i++ {
		if err := admin.RegisterNode(ctx, store.NodeRecord{Name: hostName(i), Registered: time.Now().UTC()}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < G; i++ {
		spec := model.DefaultGuestSpec(guestName(i))
		spec.Node = hostName(i % H)
		b, _ := json.Marshal(cluster.Guest{Spec: spec, Def: guestdef.Definition{Name: spec.Name, VCPUs: 1, Memory: model.GiB}, Created: time.Now()})
		ops = append(ops, clientv3.OpPut(cluster.KeyGuest(spec.Name), string(b)))
		if len(ops) == 100 {
			flush()
		}
	}
	flush()

	// The hosts, their guests already running.
	fl := &fleet{hosts: map[string]*fakeHV{}}
	hosts := make([]*host, H)
	var st *store.Store
	timings := manager.DefaultTimings()
	timings.LeaseTTL, timings.Keepalive = *leaseTTL, *keepalive
	// The hosts start in batches of 50, each batch's at once (their
	// leases granted in parallel, as real hosts boot), and each batch
	// publishes its guests before the next starts: a thousand hosts
	// adopting 50,000 guests at once only measure the store's queue.
	const batch = 50
	for first := 0; first < H; first += batch {
		n := min(batch, H-first)
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := first; i < first+n; i++ {
			if i%*perClient == 0 {
				st = connect()
			}
			h := &host{name: hostName(i), hv: fl.add(hostName(i)), done: make(chan struct{})}
			for j := i; j < G; j += H {
				h.hv.guests[guestName(j)] = hypervisor.Running
			}
			hosts[i] = h
			wg.Add(1)
			go func(st *store.Store, dir string) {
				defer wg.Done()
				// This release's agents (their feature level: without
				// it the manager takes them for an older release and
				// saves the whole state in its format too, at every step).
				facts := model.NodeFacts{Name: h.name, Memory: int64(perHost*3) * model.GiB, CPUs: 64, BootID: "boot-" + h.name,
					AgentVersion: version.String(), FeatureLevel: model.FeatureLevel}
				var err error
				for try := 0; try < 4; try++ {
					if h.live, err = st.StartLiveness(ctx, facts, timings.LeaseTTL, timings.Keepalive); err == nil {
						break
					}
				}
				if err != nil {
					errs[i-first] = err
					return
				}
				hctx, hcancel := context.WithCancel(ctx)
				h.cancel = hcancel
				ha := hostagent.New(hostagent.Config{Node: h.name, DataDir: dir, Cluster: cluster.New(st), Live: h.live, Driver: h.hv, LeaseTTL: timings.LeaseTTL, Keepalive: timings.Keepalive, Logger: quiet})
				go func() { defer close(h.done); _ = ha.Run(hctx) }()
			}(st, t.TempDir())
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		want := 0
		for j := 0; j < first+n; j++ {
			want += (G - j + H - 1) / H
		}
		waitEvery(t, fmt.Sprintf("the guests of the first %d hosts reported", first+n), 5*time.Minute, heavyPoll, func() bool {
			resp, err := cli.Get(ctx, cluster.PrefixReports, clientv3.WithPrefix(), clientv3.WithCountOnly())
			return err == nil && resp.Count == int64(want)
		})
		t.Logf("%d hosts up, their %d guests reported, %v", first+n, want, time.Since(t0).Round(time.Millisecond))
	}
	t.Cleanup(func() {
		for _, h := range hosts {
			h.cancel()
		}
		for _, h := range hosts {
			<-h.done
			h.live.Release()
		}
	})
	waitEvery(t, "every guest reported by its host", 5*time.Minute, heavyPoll, func() bool {
		resp, err := cli.Get(ctx, cluster.PrefixReports, clientv3.WithPrefix(), clientv3.WithCountOnly())
		return err == nil && resp.Count == int64(G)
	})
	setup := time.Since(t0)

	// The manager, in a process of its own, and a standby.
	logDir := t.TempDir()
	startManager := func(name string) *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "HAVEN_CP_MANAGER="+name, "HAVEN_CP_ENDPOINTS="+endpoints, "HAVEN_CP_TLS="+tlsDir, "HAVEN_CP_TTL="+mgrTTL.String(),
			"HAVEN_CP_LEASE_TTL="+leaseTTL.String(), "HAVEN_CP_KEEPALIVE="+keepalive.String(), "HAVEN_CP_PROFILE="+*profDir)
		logf, err := os.Create(filepath.Join(logDir, name+".log"))
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			logf.Close()
			if t.Failed() {
				b, _ := os.ReadFile(logf.Name())
				t.Logf("%s log:\n%s", name, tail(string(b), 3000))
			}
		})
		return cmd
	}
	t1 := time.Now()
	mgrA := startManager("mgr-a")
	var loaded time.Duration
	waitEvery(t, "the manager to adopt every guest", 5*time.Minute, heavyPoll, func() bool {
		s, _, err := savedstate.Read(ctx, cli)
		if err != nil || s == nil || len(s.Guests) != G {
			return false
		}
		for _, g := range s.Guests {
			if g.State != manager.GuestStarted || !g.Running {
				return false
			}
		}
		loaded = time.Since(t1)
		return true
	})
	var mgrB *exec.Cmd
	if *doFailover {
		mgrB = startManager("mgr-b")
	}
	rssA := rss(mgrA.Process.Pid)

	// Lose host 0: power off, its agent gone, its lease revoked.
	lost := hosts[0]
	lostGuests := map[string]bool{}
	for j := 0; j < G; j += H {
		lostGuests[guestName(j)] = true
	}
	rec := newRecorder(ctx, cli, lost.name, lostGuests)
	<-rec.ready
	var win *window
	if *profDir != "" {
		procs := map[string]int{"hosts": os.Getpid(), "manager": mgrA.Process.Pid}
		for i, pid := range etcdPids {
			procs[fmt.Sprintf("etcd%d", i)] = pid
		}
		var members []string
		if *external {
			members = strings.Split(endpoints, ",")
		}
		win = startWindow(t, *profDir, procs, members)
	}
	tLost := time.Now()
	lost.hv.powerOff()
	lost.cancel()
	<-lost.done
	lost.live.Stop(ctx)
	waitFor(t, fmt.Sprintf("the %d guests of %s ordered and running elsewhere", len(lostGuests), lost.name), 2*time.Minute, rec.complete)
	if win != nil {
		win.stop()
	}
	fenceAt, ordered, running := rec.figures()
	detect := fenceAt.Sub(tLost)
	runningGuests := 0
	for _, h := range hosts[1:] {
		runningGuests += h.hv.running()
	}
	if runningGuests != G {
		t.Errorf("%d guests run on the surviving hosts' hypervisors, want %d", runningGuests, G)
	}

	// Kill the manager; the standby takes over.
	var killToWin, winToActing time.Duration
	if *doFailover {
		tKill := time.Now()
		if err := mgrA.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		var won struct{ At, Rev int64 }
		waitFor(t, "the standby manager to win", time.Minute, func() bool {
			resp, err := cli.Get(ctx, benchPrefix+"won/mgr-b")
			return err == nil && len(resp.Kvs) == 1 && json.Unmarshal(resp.Kvs[0].Value, &won) == nil
		})
		var acting int64
		waitFor(t, "the standby manager to load the state and carry out its first step", time.Minute, func() bool {
			resp, err := cli.Get(ctx, benchPrefix+"acting/mgr-b")
			return err == nil && len(resp.Kvs) == 1 && json.Unmarshal(resp.Kvs[0].Value, &acting) == nil
		})
		killToWin = time.Unix(0, won.At).Sub(tKill)
		winToActing = time.Unix(0, acting).Sub(time.Unix(0, won.At))
	}

	var dbSize int64
	for _, ep := range strings.Split(endpoints, ",") {
		if s, err := cli.Status(ctx, ep); err == nil && s.DbSize > dbSize {
			dbSize = s.DbSize
		}
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	selfRSS := rss(os.Getpid())
	rssB := int64(0)
	if mgrB != nil {
		rssB = rss(mgrB.Process.Pid)
	}
	load, _ := os.ReadFile("/proc/loadavg")
	if *shm {
		kind += ", data in /dev/shm"
	}
	fmt.Printf("control plane: %d hosts x %d guests, %s, host lease TTL %v renewed every %v (load %s)\n", H, G, kind, *leaseTTL, *keepalive, strings.Join(strings.Fields(string(load))[:3], " "))
	fmt.Printf("  setup (records, hosts up, every guest reported)  %v\n", setup.Round(time.Millisecond))
	fmt.Printf("  manager start -> every guest adopted and saved    %v\n", loaded.Round(time.Millisecond))
	fmt.Printf("  host lost -> fence result                         %v\n", detect.Round(time.Millisecond))
	fmt.Printf("  fence result -> all %d guests ordered            %v\n", len(lostGuests), ordered.Round(time.Millisecond))
	fmt.Printf("  fence result -> all %d guests reported running   %v\n", len(lostGuests), running.Round(time.Millisecond))
	fmt.Printf("    %s\n", rec.spread())
	if *doFailover {
		fmt.Printf("  manager SIGKILL -> standby elected (TTL %v)      %v\n", *mgrTTL, killToWin.Round(time.Millisecond))
		fmt.Printf("  standby elected -> state loaded, first step saved %v\n", winToActing.Round(time.Millisecond))
		// Where its takeover went: the standby's log says how long it read
		// the store, restored the state, and carried out its first step.
		if b, err := os.ReadFile(filepath.Join(logDir, "mgr-b.log")); err == nil {
			for _, l := range strings.Split(string(b), "\n") {
				if strings.Contains(l, "manager running") || strings.Contains(l, "first step is carried out") {
					fmt.Printf("    standby: %s\n", l)
				}
			}
		}
	}
	fmt.Printf("  store size %.1f MiB; manager RSS %d MiB (standby after takeover %d MiB); agents' process RSS %d MiB for %d hosts (%.1f MiB per host)\n",
		float64(dbSize)/(1<<20), rssA>>20, rssB>>20, selfRSS>>20, H, float64(selfRSS)/float64(H)/(1<<20))

	if *targets != "" {
		want := strings.Split(*targets, ",")
		check := func(i int, what string, got time.Duration) {
			if i >= len(want) {
				return
			}
			d, err := time.ParseDuration(want[i])
			if err != nil {
				t.Fatalf("-cp.targets %q: %v", *targets, err)
			}
			if got > d {
				t.Errorf("%s took %v, target %v", what, got, d)
			}
		}
		check(0, "fence result -> all ordered", ordered)
		check(1, "fence result -> all running", running)
		if *doFailover {
			check(2, "standby elected -> acting", winToActing)
		}
	}
}

// recorder watches the orders and reports that follow a host's loss.
type recorder struct {
	ready chan struct{}
	mu    sync.Mutex
	lost  string
	want  map[string]bool
	fence time.Time
	order map[string]time.Time
	run   map[string]time.Time
}

func newRecorder(ctx context.Context, cli *clientv3.Client, lost string, want map[string]bool) *recorder {
	r := &recorder{ready: make(chan struct{}), lost: lost, want: want, order: map[string]time.Time{}, run: map[string]time.Time{}}
	resp, err := cli.Get(ctx, "/", clientv3.WithCountOnly())
	if err != nil {
		panic(err)
	}
	rev := resp.Header.Revision
	watch := func(prefix string, fn func(now time.Time, ev *clientv3.Event)) {
		wch := cli.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
		for wr := range wch {
			now := time.Now()
			for _, ev := range wr.Events {
				fn(now, ev)
			}
		}
	}
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { wg.Done(); watch(benchPrefix+"fenced/", r.onFence) }()
	go func() { wg.Done(); watch(cluster.PrefixOrders, r.onOrder) }()
	go func() { wg.Done(); watch(cluster.PrefixReports, r.onReport) }()
	go func() { wg.Wait(); close(r.ready) }()
	return r
}

func (r *recorder) onFence(now time.Time, ev *clientv3.Event) {
	if ev.Type != clientv3.EventTypePut || !strings.HasSuffix(string(ev.Kv.Key), "/"+r.lost) {
		return
	}
	ns, err := strconv.ParseInt(string(ev.Kv.Value), 10, 64)
	if err != nil {
		return
	}
	r.mu.Lock()
	if r.fence.IsZero() {
		r.fence = time.Unix(0, ns)
	}
	r.mu.Unlock()
}

func (r *recorder) onOrder(now time.Time, ev *clientv3.Event) {
	node, guest, ok := strings.Cut(strings.TrimPrefix(string(ev.Kv.Key), cluster.PrefixOrders), "/")
	if !ok || node == r.lost || !r.want[guest] || ev.Type != clientv3.EventTypePut {
		return
	}
	var o hostctl.Order
	if json.Unmarshal(ev.Kv.Value, &o) != nil || o.Op != hostctl.OpStart {
		return
	}
	r.mu.Lock()
	if _, seen := r.order[guest]; !seen {
		r.order[guest] = now
	}
	r.mu.Unlock()
}

func (r *recorder) onReport(now time.Time, ev *clientv3.Event) {
	node, guest, ok := cluster.ReportFromKey(string(ev.Kv.Key))
	if !ok || node == r.lost || !r.want[guest] || ev.Type != clientv3.EventTypePut {
		return
	}
	var rep hostctl.Report
	if json.Unmarshal(ev.Kv.Value, &rep) != nil || rep.State != hostctl.Running || rep.Op != hostctl.OpStart || rep.Result != hostctl.ResultOK {
		return
	}
	r.mu.Lock()
	if _, seen := r.run[guest]; !seen {
		r.run[guest] = now
	}
	r.mu.Unlock()
}

func (r *recorder) complete() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return !r.fence.IsZero() && len(r.order) == len(r.want) && len(r.run) == len(r.want)
}

// figures: the fence result's time, and from it the last order and the
// last running report.
func (r *recorder) figures() (time.Time, time.Duration, time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	last := func(m map[string]time.Time) time.Time {
		var ts []time.Time
		for _, t := range m {
			ts = append(ts, t)
		}
		sort.Slice(ts, func(i, j int) bool { return ts[i].Before(ts[j]) })
		return ts[len(ts)-1]
	}
	return r.fence, last(r.order).Sub(r.fence), last(r.run).Sub(r.fence)
}

// spread says when, after the fence result, the first, the median and
// the last guest was ordered and reported running.
func (r *recorder) spread() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	q := func(m map[string]time.Time) string {
		var ds []time.Duration
		for _, t := range m {
			ds = append(ds, t.Sub(r.fence))
		}
		slices.Sort(ds)
		if len(ds) == 0 {
			return "none"
		}
		return fmt.Sprintf("%v / %v / %v", ds[0].Round(time.Millisecond), ds[len(ds)/2].Round(time.Millisecond), ds[len(ds)-1].Round(time.Millisecond))
	}
	return "ordered (first / median / last) " + q(r.order) + "; running " + q(r.run)
}

// rss is a process's resident set size in bytes (0 if unknown).
func rss(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	waitEvery(t, what, d, 50*time.Millisecond, cond)
}

// waitEvery is waitFor polling every interval.
func waitEvery(t *testing.T, what string, d, interval time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(interval)
	}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

// timingsHandler passes warnings and errors, and of the info records only
// the manager's takeover timings: the bench's manager logs nothing per
// guest. It tells acting when a term's first step was carried out.
type timingsHandler struct {
	slog.Handler
	acting func(time.Time)
}

func (h timingsHandler) Handle(ctx context.Context, r slog.Record) error {
	first := strings.HasPrefix(r.Message, "the term's first step")
	if r.Level < slog.LevelWarn && r.Message != "manager running" && !first {
		return nil
	}
	if first {
		h.acting(r.Time)
	}
	return h.Handler.Handle(ctx, r)
}

func (h timingsHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return timingsHandler{h.Handler.WithAttrs(as), h.acting}
}

func (h timingsHandler) WithGroup(name string) slog.Handler {
	return timingsHandler{h.Handler.WithGroup(name), h.acting}
}
