package control

import (
	"context"
	"maps"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/store"
)

// A host's live key can vanish while the host is up and beating: etcd
// lets a store leader that was frozen (SIGSTOP, a paused VM) and resumes
// revoke every lease whose renewals it did not see meanwhile, which is
// all of them (etcd's guard against this, a leadership check, is skipped
// when the member ticked just before, and a resumed process ticks at
// once). Such a host finds its lease gone at its next keepalive and
// registers again at once. The manager therefore does not take the
// deletion of a live key for a failure while the agent's direct
// heartbeats say that host is alive (Daemon.Beating): it holds the
// deletion for vanishGrace; if the host registers again meanwhile with the
// same boot nothing happened, otherwise the deletion is fed then. A host
// that really died is never held: its heartbeats stopped before its lease
// could end (the fast detector ends it only once they are gone, the TTL
// only long after).

// vanishGrace is how long the deletion of a beating host's live key is held:
// two keepalive intervals (the host registers again at its next one), at
// least a second.
func vanishGrace(keepalive time.Duration) time.Duration {
	return max(2*keepalive, time.Second)
}

// deferGone reports whether the deletion of node's live key is held
// (the host beats), and starts the hold.
func (f *feed) deferGone(node string, now time.Time) bool {
	if f.beating == nil || !f.beating(node) {
		return false
	}
	if _, held := f.vanished[node]; !held {
		if f.vanished == nil {
			f.vanished = map[string]time.Time{}
		}
		f.vanished[node] = now
		f.log.Warn("a host's live key was deleted while it beats: waiting for it to register again before taking it for failed", "node", node, "hold", f.grace)
	}
	return true
}

// vanishedUntil is when the oldest hold ends, if any.
func (f *feed) vanishedUntil() (time.Time, bool) {
	var first time.Time
	for _, at := range f.vanished {
		if first.IsZero() || at.Before(first) {
			first = at
		}
	}
	return first.Add(f.grace), !first.IsZero()
}

// expireVanished feeds the deletions whose hold ended at now: those hosts did
// not register again.
func (f *feed) expireVanished(now time.Time) []Input {
	var out []Input
	for _, node := range slices.Sorted(maps.Keys(f.vanished)) {
		if now.Sub(f.vanished[node]) < f.grace {
			continue
		}
		delete(f.vanished, node)
		f.log.Warn("a beating host did not register again: taken for failed", "node", node)
		out = append(out, f.gone(node)...)
	}
	return out
}

// awaitBeatingHosts waits, before a term loads the cluster, up to hold for
// the registered hosts that beat but have no live key to register again
// (their leases were revoked as a store leader resumed, which may also
// have ended the previous manager's term): loaded without it, they would
// be taken for failed at once.
func awaitBeatingHosts(ctx context.Context, cli *clientv3.Client, beating func(string) bool, hold time.Duration) {
	if beating == nil {
		return
	}
	deadline := time.Now().Add(hold)
	for {
		missing, err := beatingWithoutLiveKey(ctx, cli, beating)
		if err != nil || len(missing) == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func beatingWithoutLiveKey(ctx context.Context, cli *clientv3.Client, beating func(string) bool) ([]string, error) {
	names := func(prefix string) ([]string, error) {
		resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			return nil, err
		}
		var out []string
		for _, kv := range resp.Kvs {
			out = append(out, strings.TrimPrefix(string(kv.Key), prefix))
		}
		return out, nil
	}
	reg, err := names(store.PrefixNodeReg)
	if err != nil {
		return nil, err
	}
	live, err := names(store.PrefixNodeLive)
	if err != nil {
		return nil, err
	}
	var missing []string
	for _, n := range reg {
		if !slices.Contains(live, n) && beating(n) {
			missing = append(missing, n)
		}
	}
	return missing, nil
}
