package store

import (
	"testing"

	"go.etcd.io/etcd/client/pkg/v3/types"
	"go.etcd.io/etcd/server/v3/etcdserver/api/membership"
)

// TestLeaderTransferees: store leadership moves only to a voting member
// whose host is alive; with nothing known alive, nowhere. A new manager
// handed it to the dead host it replaced (the first member listed), and
// every store write waited out the transfer, again and again.
func TestLeaderTransferees(t *testing.T) {
	m := func(id uint64, name string, learner bool) *membership.Member {
		return &membership.Member{ID: types.ID(id), RaftAttributes: membership.RaftAttributes{IsLearner: learner}, Attributes: membership.Attributes{Name: name}}
	}
	members := []*membership.Member{m(1, "h1", false), m(4, "h4", true), m(3, "h3", false), m(2, "h2", false), m(5, "h5", false)}
	alive := map[string]bool{"h2": true, "h3": true, "h4": true}
	got := leaderTransferees(members, 2, func(n string) bool { return alive[n] })
	if len(got) != 1 || got[0].Name != "h3" {
		t.Fatalf("transferees %v, want h3 only (h1 and h5 dead, h4 a learner, h2 itself)", names(got))
	}
	alive["h1"], alive["h5"] = true, true
	if got := names(leaderTransferees(members, 2, func(n string) bool { return alive[n] })); len(got) != 3 || got[0] != "h1" || got[1] != "h3" || got[2] != "h5" {
		t.Fatalf("transferees %v, want h1 h3 h5", got)
	}
	if got := leaderTransferees(members, 2, nil); len(got) != 0 {
		t.Fatalf("transferees %v without knowing who is alive, want none", names(got))
	}
}

func names(ms []*membership.Member) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Name)
	}
	return out
}
