package failover

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"libvirt.org/go/libvirtxml"

	"github.com/haven-ha/haven/internal/api/client"
	"github.com/haven-ha/haven/internal/hypervisor/libvirt"
	"github.com/haven-ha/haven/internal/testguest"
)

// BenchmarkLiveMigration moves a running guest between h1 and h2 by live
// migration through the API, b.N times per driver, and times the command
// until the API reports it running on the target. It also reads, from the
// source agent's log, how long the hypervisor's own migration took (the
// QEMU driver's migrate command, libvirt's peer-to-peer
// DomainMigratePerform3, which is what `virsh migrate --live --p2p` calls),
// so the cluster's overhead shows: orders through the store, the target's
// receive phase, the reports.
//
// On libvirt it also times raw `virsh migrate --live --p2p` in the same run
// on the same hosts (rawDomain): a copy of the guest's domain that Haven does
// not manage, migrated with the flags Haven's driver uses, interleaved with
// the cluster's rounds so both see the same load.
//
// Metrics (medians over the rounds): migrate-median-s (the command until
// reported running on the target), driver-median-s (the driver's call),
// cluster-median-s (each round's migrate minus driver: the cluster's own
// part), virsh-median-s, and overhead-s (migrate minus virsh medians).
//
//	go test ./test/failover/ -run '^$' -bench LiveMigration -benchtime 10x
func BenchmarkLiveMigration(b *testing.B) {
	for _, hv := range strings.Split(*hypervisors, ",") {
		b.Run(hv, func(b *testing.B) { liveMigration(b, hv) })
	}
}

var logTime = regexp.MustCompile(`time=(\S+) `)

// guestLog calls fn with the time and text of every line of an agent log
// about guest, in order, until fn returns false.
func guestLog(log, guest string, fn func(at time.Time, line string) bool) {
	done := false
	timedLines(log, func(at time.Time, line string) {
		if !done && strings.Contains(line, "guest="+guest+" ") {
			done = !fn(at, line)
		}
	})
}

// driverMigration finds, in the agent log since offset, when the driver's
// live migration of guest started and completed.
func driverMigration(log, guest string) (took time.Duration, ok bool) {
	var start time.Time
	guestLog(log, guest, func(at time.Time, line string) bool {
		switch {
		case strings.Contains(line, `msg="live migration started"`) || strings.Contains(line, `msg="migration starting"`):
			start = at
		case (strings.Contains(line, `msg="live migration completed"`) || strings.Contains(line, `msg="migration completed"`)) && !start.IsZero():
			took, ok = at.Sub(start), true
			return false
		}
		return true
	})
	return took, ok
}

func liveMigration(b *testing.B, hv string) {
	c := newCluster(b, options{hypervisor: hv})
	c.guest("g1", "", "h1")
	c.waitRunning(120*time.Second, func(g, n string) bool { return n == "h1" })
	var total, drv, own, raw []time.Duration
	var vd *rawDomain
	if hv == "libvirt" {
		vd = newRawDomain(c, "g1", "h1")
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		rows, _ := c.guestRows()
		src := rows["g1"].Node
		dst := map[string]string{"h1": "h2", "h2": "h1"}[src]
		c.waitStamp("g1", time.Now(), 60*time.Second)
		logStart, dstStart := len(c.logOf(c.node(src))), len(c.logOf(c.node(dst)))
		b.StartTimer()
		t0 := time.Now()
		c.api(func(ctx context.Context, cl *client.Client) error {
			_, err := cl.GuestCommand(ctx, "g1", "migrate", dst)
			return err
		})
		var took time.Duration
		c.poll("g1 on "+dst, 60*time.Second, func() bool {
			for time.Since(t0) < 60*time.Second {
				rows, err := c.guestRows()
				if r := rows["g1"]; err == nil && r.Node == dst && r.Running && r.State == "started" && r.Op == nil {
					took = time.Since(t0)
					return true
				}
				time.Sleep(20 * time.Millisecond)
			}
			return false
		})
		b.StopTimer()
		log := c.logOf(c.node(src))
		if len(log) > logStart {
			log = log[logStart:]
		}
		d, ok := driverMigration(log, "g1")
		if ok {
			drv = append(drv, d)
			own = append(own, took-d)
		}
		total = append(total, took)
		dlog := c.logOf(c.node(dst))
		if len(dlog) > dstStart {
			dlog = dlog[dstStart:]
		}
		b.Logf("round %d: %s -> %s: reported running on the target %v after the command; the driver's migration took %v (cluster overhead %v); the agents' log:\n%s",
			i+1, src, dst, took.Round(time.Millisecond), d.Round(time.Millisecond), (took - d).Round(time.Millisecond),
			timeline(t0, "g1", map[string]string{src: log, dst: dlog}))
		if vd != nil {
			// The same flags as the driver's migration of this round.
			from, to := vd.node, map[string]string{"h1": "h2", "h2": "h1"}[vd.node]
			tls := strings.Contains(driverStartLine(log, "g1"), " tls=true")
			v := vd.migrate(to, tls)
			raw = append(raw, v)
			b.Logf("round %d: virsh migrate --live --p2p (tls %v) of %s, %s -> %s: returned (the guest running on the target) after %v",
				i+1, tls, vd.name, from, to, v.Round(time.Millisecond))
		}
		c.noDoubleRun()
	}
	if vd != nil {
		vd.untouched()
	}
	med := map[string]time.Duration{}
	for _, m := range []struct {
		name string
		ds   []time.Duration
	}{{"migrate", total}, {"driver", drv}, {"cluster", own}, {"virsh", raw}} {
		if len(m.ds) == 0 {
			continue
		}
		slices.Sort(m.ds)
		med[m.name] = m.ds[len(m.ds)/2]
		b.ReportMetric(med[m.name].Seconds(), m.name+"-median-s")
		b.Logf("%s: median %v over %d rounds", m.name, med[m.name].Round(10*time.Millisecond), len(m.ds))
	}
	if len(raw) > 0 {
		over := med["migrate"] - med["virsh"]
		b.ReportMetric(over.Seconds(), "overhead-s")
		b.Logf("cluster live migration %v vs raw virsh migrate --live --p2p %v in the same run: overhead %v (target: at most 0.2 s)",
			med["migrate"].Round(10*time.Millisecond), med["virsh"].Round(10*time.Millisecond), over.Round(10*time.Millisecond))
	}
}

// timeline lists the lines of the agents' logs (by node) about guest, in
// time order, each with its time since t0: where a migration's time goes.
func timeline(t0 time.Time, guest string, logs map[string]string) string {
	type entry struct {
		at   time.Time
		line string
	}
	var es []entry
	for node, log := range logs {
		guestLog(log, guest, func(at time.Time, line string) bool {
			if _, rest, ok := strings.Cut(line, " msg="); ok {
				line = "msg=" + rest
			}
			if len(line) > 200 {
				line = line[:200] + "..."
			}
			es = append(es, entry{at, fmt.Sprintf("%+8.3fs %s %s", at.Sub(t0).Seconds(), node, line)})
			return true
		})
	}
	slices.SortStableFunc(es, func(a, b entry) int { return a.at.Compare(b.at) })
	var sb strings.Builder
	for _, e := range es {
		sb.WriteString("\t" + e.line + "\n")
	}
	return sb.String()
}

// driverStartLine is the driver's "live migration started" line of guest in
// an agent log.
func driverStartLine(log, guest string) (line string) {
	guestLog(log, guest, func(_ time.Time, l string) bool {
		if strings.Contains(l, `msg="live migration started"`) {
			line = l
			return false
		}
		return true
	})
	return line
}

// rawDomain is a libvirt domain Haven does not manage, for timing raw
// `virsh migrate --live --p2p` next to the cluster's migrations: the
// persistent definition Haven gave a guest (`virsh dumpxml --inactive`),
// renamed, with a UUID of its own and its own disk and serial log, defined
// and started with virsh on a host's libvirtd. It is not in the cluster's
// guest list, so the manager orders nothing for it: the agents see its
// lifecycle events like any domain's, and the manager ignores guests it
// does not know (untouched checks that it ran throughout and stayed out of
// the guest list).
type rawDomain struct {
	c          *testCluster
	name, node string // where it runs
	unsafe     bool   // its disks bypass the page cache: the driver adds --unsafe (DisksUncached)
}

func newRawDomain(c *testCluster, like, node string) *rawDomain {
	c.t.Helper()
	v := &rawDomain{c: c, name: "virshbench", node: node}
	xml := v.virsh(node, "dumpxml", "--inactive", like)
	dom := &libvirtxml.Domain{}
	if err := dom.Unmarshal(xml); err != nil {
		c.t.Fatalf("domain XML of %s: %v", like, err)
	}
	dom.Name, dom.UUID = v.name, "" // libvirt draws a UUID
	shared := c.bed.SharedDir()
	disk := filepath.Join(shared, v.name+".img")
	if err := testguest.CreateDisk(disk, 1<<20); err != nil {
		c.t.Fatal(err)
	}
	replaced := 0
	for i := range dom.Devices.Disks {
		if s := dom.Devices.Disks[i].Source; s != nil && s.File != nil && s.File.File == filepath.Join(shared, like+".img") {
			s.File.File = disk
			replaced++
		}
	}
	if replaced != 1 {
		c.t.Fatalf("domain XML of %s: %d disks on %s, want 1:\n%s", like, replaced, filepath.Join(shared, like+".img"), xml)
	}
	logs := []*libvirtxml.DomainChardevLog{}
	for _, ser := range dom.Devices.Serials {
		logs = append(logs, ser.Log)
	}
	for _, con := range dom.Devices.Consoles { // libvirt's mirror of the first serial port
		logs = append(logs, con.Log)
	}
	for _, l := range logs {
		if l != nil && l.File == filepath.Join(shared, like+".serial") {
			l.File = filepath.Join(shared, v.name+".serial")
		}
	}
	for i := range dom.Devices.Channels {
		if s := dom.Devices.Channels[i].Source; s != nil && s.UNIX != nil {
			s.UNIX.Path = "" // libvirt names the socket after the domain
		}
	}
	out, err := dom.Marshal()
	if err != nil {
		c.t.Fatal(err)
	}
	if strings.Contains(out, like+".") || strings.Contains(out, "<name>"+like+"<") {
		c.t.Fatalf("the copy of %s's domain still names %s's files:\n%s", like, like, out)
	}
	if v.unsafe, err = libvirt.DisksUncached(out); err != nil {
		c.t.Fatal(err)
	}
	file := filepath.Join(c.t.TempDir(), v.name+".xml")
	if err := os.WriteFile(file, []byte(out), 0o644); err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() {
		// Wherever it is: destroy, undefine (the bed goes next anyway).
		for _, h := range []string{"h1", "h2"} {
			v.try(h, "destroy", v.name)
			v.try(h, "undefine", v.name)
		}
	})
	v.virsh(node, "define", file)
	v.virsh(node, "start", v.name)
	c.checker.Watch(v.name, disk)
	c.waitStamp(v.name, time.Now(), 120*time.Second) // booted
	return v
}

// uri is the local libvirt URI of a host, for virsh on this machine.
func (v *rawDomain) uri(node string) string {
	return "qemu:///system?socket=" + v.c.node(node).h.LibvirtSocket()
}

func (v *rawDomain) try(node string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(v.c.ctx, 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "virsh", append([]string{"-c", v.uri(node)}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("virsh on %s: %s: %w: %s", node, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func (v *rawDomain) virsh(node string, args ...string) string {
	v.c.t.Helper()
	out, err := v.try(node, args...)
	if err != nil {
		v.c.t.Fatal(err)
	}
	return out
}

// migrate live-migrates the domain to node with `virsh migrate --live --p2p`
// and the other flags the libvirt driver passes (--persistent,
// --abort-on-error; --unsafe for uncached disks; --tls naming the target
// when tls), and returns how long the command took: in peer-to-peer mode it
// returns once the target runs the guest (checked with domstate), while the
// cluster's API is read every 20 ms as during the cluster's rounds. The
// source's inactive definition is then undefined, as the driver does, out of
// the timing.
func (v *rawDomain) migrate(node string, tls bool) time.Duration {
	v.c.t.Helper()
	v.c.waitStamp(v.name, time.Now(), 60*time.Second)
	args := []string{"migrate", "--live", "--p2p", "--persistent", "--abort-on-error"}
	if v.unsafe {
		args = append(args, "--unsafe")
	}
	if tls {
		args = append(args, "--tls", "--tls-destination", node)
	}
	args = append(args, v.name, v.c.node(node).h.LibvirtURI())
	// The API is read as often as while the cluster's migration is timed,
	// so that both bear the same observer's load.
	stop, polled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(polled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			v.c.guestRows()
		}
	}()
	t0 := time.Now()
	_, err := v.try(v.node, args...)
	took := time.Since(t0)
	close(stop)
	<-polled
	if err != nil {
		v.c.t.Fatal(err)
	}
	if st := strings.TrimSpace(v.virsh(node, "domstate", v.name)); st != "running" {
		v.c.t.Fatalf("virsh migrate of %s to %s returned; domstate there says %q", v.name, node, st)
	}
	v.virsh(v.node, "undefine", v.name)
	v.node = node
	return took
}

// untouched checks that Haven left the domain alone: it still runs where
// virsh put it, and the cluster does not list it.
func (v *rawDomain) untouched() {
	v.c.t.Helper()
	if st := strings.TrimSpace(v.virsh(v.node, "domstate", v.name)); st != "running" {
		v.c.t.Errorf("%s (not Haven's) is %q on %s, want running", v.name, st, v.node)
	}
	rows, err := v.c.guestRows()
	if err != nil {
		v.c.t.Fatal(err)
	}
	if _, ok := rows[v.name]; ok {
		v.c.t.Errorf("the cluster lists %s, a domain it did not define: %+v", v.name, rows[v.name])
	}
	for _, e := range v.c.events() {
		if strings.Contains(e.Msg, v.name) {
			v.c.t.Errorf("cluster event about %s, a domain it did not define: %s", v.name, e.Msg)
		}
	}
}
