package agent

import (
	"context"
	"net"
	"net/url"
	"time"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/heartbeat"
	"github.com/haven-ha/haven/internal/model"
)

// Heartbeat is this agent's direct-heartbeat monitor, or nil when it sends
// none (--heartbeat-listen off, or the socket could not be bound).
func (a *Agent) Heartbeat() *heartbeat.Monitor { return a.hb }

// startHeartbeat binds the heartbeat socket and starts beating to the
// cluster's other agents, following their live keys, and watching the
// manager. Any failure leaves the host to its lease alone, with a warning.
func (a *Agent) startHeartbeat(ctx context.Context) {
	if a.cfg.HeartbeatListen == "off" {
		return
	}
	secret, err := a.st.HeartbeatKey(ctx)
	if err != nil {
		a.log.Warn("no direct heartbeats: the cluster's heartbeat key is unreadable; a dead host is seen when its lease expires", "op", "heartbeat", "err", err)
		return
	}
	hb, err := heartbeat.New(heartbeat.Config{
		Node: a.cfg.Node, Listen: a.cfg.HeartbeatListen, Key: heartbeat.Key(secret),
		DeadAfter: a.cfg.HeartbeatDeadAfter, StorageDir: a.cfg.StorageHeartbeat, Logger: a.log,
	})
	if err != nil {
		a.log.Warn("no direct heartbeats: a dead host is seen when its lease expires", "op", "heartbeat", "err", err)
		return
	}
	a.hb = hb
	// Store leadership moves only to a member whose agent beats now.
	a.st.SetLeaderCandidates(func(name string) bool { return hb.Verdict(name).State == heartbeat.Alive })
	a.srv.AddStatusHook(func(_ context.Context, st *api.Status) error {
		for i := range st.Hosts {
			st.Hosts[i].Isolated = hb.Verdict(st.Hosts[i].Name).Isolated()
		}
		return nil
	})
	hctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	a.stopHB = cancel
	a.wg.Add(2)
	go func() {
		defer a.wg.Done()
		hb.Run(hctx)
	}()
	go func() {
		defer a.wg.Done()
		a.followPeers(hctx)
	}()
}

// followPeers keeps the heartbeat peers in step with the live keys.
func (a *Agent) followPeers(ctx context.Context) {
	for ctx.Err() == nil {
		live, rev, err := a.st.LiveNodes(ctx)
		if err != nil {
			sleepCtx(ctx, time.Second)
			continue
		}
		a.hb.SetPeers(peersOf(live))
		for ev := range a.st.WatchLive(ctx, rev) {
			if ev.Resync {
				break
			}
			if ev.Facts != nil {
				live[ev.Node] = *ev.Facts
			} else {
				// A peer whose lease ended stays watched: it may be back
				// (a new lease) any moment, and Gone needs its history.
				continue
			}
			a.hb.SetPeers(peersOf(live))
		}
	}
}

func peersOf(live map[string]model.NodeFacts) []heartbeat.Peer {
	ps := make([]heartbeat.Peer, 0, len(live))
	for name, f := range live {
		ps = append(ps, heartbeat.Peer{Name: name, Heartbeat: f.HeartbeatAddr, Probe: hostOfURL(f.APIAddr)})
	}
	return ps
}

// hostOfURL is the host:port of an https URL ("" if none).
func hostOfURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return ""
	}
	if _, _, err := net.SplitHostPort(u.Host); err != nil {
		return ""
	}
	return u.Host
}
