package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/api/client"
	"github.com/haven-ha/haven/internal/pki"
)

// BenchmarkInitToReady: from exec of `haven agent --init` to its "agent
// ready" log line (CA, certificates, embedded store, tokens, API, lease).
func BenchmarkInitToReady(b *testing.B) {
	var total time.Duration
	for i := 0; i < b.N; i++ {
		c := newCluster(b, 90)
		t0 := time.Now()
		c.initNode("b1")
		total += time.Since(t0)
		c.stopAll()
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/ready")
}

// BenchmarkIdleRSS: resident memory of idle agents, alone and as members
// of a three-host cluster, after 3 s of idling.
func BenchmarkIdleRSS(b *testing.B) {
	for i := 0; i < b.N; i++ {
		c := newCluster(b, 100)
		c.initNode("r1")
		c.joinNode("r2")
		c.joinNode("r3")
		c.waitStatus(c.nodes[0], "online", 20*time.Second, allOnline("r1", "r2", "r3"))
		time.Sleep(3 * time.Second) // let the agents idle; this measures, it waits for nothing
		var max float64
		for _, n := range c.nodes {
			if r := rssMiB(b, n.cmd.Process.Pid); r > max {
				max = r
			}
		}
		b.ReportMetric(max, "MiB-rss-max")
		c.stopAll()
	}
}

func rssMiB(b *testing.B, pid int) float64 {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.Atoi(f[1])
			return float64(kb) / 1024
		}
	}
	b.Fatal("no VmRSS")
	return 0
}

// BenchmarkDeathToDown: from kill -9 of a host's agent to the API showing
// it offline, with the default 5 s lease TTL and 1 s keepalive; for a store
// member that is not the manager, and for the manager (then also until a
// new manager is in office).
func BenchmarkDeathToDown(b *testing.B) {
	for _, victim := range []string{"member", "manager"} {
		b.Run(victim, func(b *testing.B) {
			c := newCluster(b, 110)
			c.initNode("d1")
			c.joinNode("d2")
			c.joinNode("d3")
			names := []string{"d1", "d2", "d3"}
			c.waitStatus(c.nodes[0], "online", 20*time.Second, allOnline(names...))
			ca, _ := os.ReadFile(c.ca)
			tlsCfg, _ := pki.ClientTLS(ca, nil, nil)
			var total, mgrTotal time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				st := c.waitStatus(c.nodes[0], "manager", 20*time.Second, func(st *api.Status) bool { return st.Manager != "" })
				var dead, via *agentProc
				for _, n := range c.nodes {
					isMgr := n.name == st.Manager
					if dead == nil && isMgr == (victim == "manager") {
						dead = n
					} else if via == nil && !isMgr {
						via = n
					}
				}
				if via == nil {
					for _, n := range c.nodes {
						if n != dead {
							via = n
						}
					}
				}
				cl := client.New("https://"+via.listen, c.admin, tlsCfg)
				c.kill9(dead)
				t0 := time.Now()
				var down, newMgr time.Duration
				for down == 0 || (victim == "manager" && newMgr == 0) {
					if time.Since(t0) > 30*time.Second {
						b.Fatalf("%s not down within 30s", dead.name)
					}
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					s, err := cl.Status(ctx)
					cancel()
					if err == nil {
						if down == 0 && hostState(s, dead.name) == api.HostOffline {
							down = time.Since(t0)
						}
						if newMgr == 0 && s.Manager != "" && s.Manager != dead.name {
							newMgr = time.Since(t0)
						}
					}
					time.Sleep(50 * time.Millisecond) // poll interval
				}
				total += down
				mgrTotal += newMgr
				cl.Close()
				b.StopTimer()
				c.restart(dead)
				c.waitStatus(via, "back online", 30*time.Second, allOnline(names...))
				b.StartTimer()
			}
			b.ReportMetric(total.Seconds()/float64(b.N), "s-to-down")
			if victim == "manager" {
				b.ReportMetric(mgrTotal.Seconds()/float64(b.N), "s-to-new-manager")
			}
		})
	}
}
