package api_test

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/health"
	"github.com/haven-ha/haven/internal/hostctl"
	"github.com/haven-ha/haven/internal/manager"
	"github.com/haven-ha/haven/internal/model"
)

// Issue 14: GET guest carries the live status of the guest's health checks
// from the report of the host that runs it, and none for a stopped guest.
func TestGuestRuntimeHealth(t *testing.T) {
	ctx := ctxT(t)
	op := ag.Clients["operator"]
	if _, err := op.CreateGuest(ctx, map[string]any{"boot": kboot, "name": "hl1", "state": "stopped"}); err != nil {
		t.Fatal(err)
	}
	withState(t, func(s *manager.State) {
		spec := model.DefaultGuestSpec("hl1")
		spec.Node = "n1"
		if err := s.AddGuest(spec, true); err != nil {
			t.Fatal(err)
		}
	})
	at := time.Now().UTC().Truncate(time.Second)
	rep := hostctl.Report{Guest: "hl1", State: hostctl.Running, At: at, Health: []health.Result{
		{Check: "web", Kind: "http", OK: false, Failures: 2, Output: "GET http://10.0.0.5/: status 503, want 200", At: at},
		{Check: "heartbeat", Kind: "agent", OK: true, At: at}}}
	b, _ := json.Marshal(rep)
	if _, err := ag.Cluster.Raw().Client().Put(ctx, cluster.KeyReport("n1", "hl1"), string(b)); err != nil {
		t.Fatal(err)
	}
	g, err := ag.Clients["viewer"].Guest(ctx, "hl1")
	if err != nil {
		t.Fatal(err)
	}
	if !g.Runtime.Running || g.Runtime.Node != "n1" {
		t.Fatalf("runtime = %+v, want running on n1", g.Runtime)
	}
	h := g.Runtime.Health
	if len(h) != 2 || h[0].Check != "web" || h[0].OK || h[0].Failures != 2 || h[0].Output != rep.Health[0].Output || !h[0].At.Equal(at) || !h[1].OK {
		t.Fatalf("runtime health = %+v, want the report's", h)
	}
	// Stopped: no health, even with a stale report left behind.
	withState(t, func(s *manager.State) { s.Guest("hl1").Running = false })
	g, err = op.Guest(ctx, "hl1")
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Runtime.Health) != 0 {
		t.Fatalf("stopped guest has health %+v", g.Runtime.Health)
	}
}

// A host's report about a guest changing (here: a health check that starts
// failing) is no event of the log; the event stream says so with
// changes=1, as "event: change" with the node and the guest, and keeps
// quiet about it without.
func TestEventStreamReportChanges(t *testing.T) {
	ctx := ctxT(t)
	srv := api.New(api.Config{Store: ag.A.Store(), Node: "n1"})
	api.RegisterOps(srv, api.OpsConfig{Heartbeat: time.Hour})
	url := newHTTPServer(t, srv.Handler())
	open := func(query string) *bufio.Reader {
		req, _ := http.NewRequestWithContext(ctx, "GET", url+"/api/v1/events/stream"+query, nil)
		req.Header.Set("Authorization", "Bearer "+ag.Tokens["viewer"])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		if resp.StatusCode != 200 {
			t.Fatalf("stream%s: %d", query, resp.StatusCode)
		}
		br := bufio.NewReader(resp.Body)
		if l, err := br.ReadString('\n'); err != nil || l != ": haven event stream\n" {
			t.Fatalf("stream%s starts with %q, %v", query, l, err)
		}
		return br
	}
	plain, changes, one := open(""), open("?changes=1"), open("?changes=1&guest=rc1")
	if code, _ := raw(t, "GET", "/api/v1/events/stream?changes=maybe", "viewer", nil); code != http.StatusBadRequest {
		t.Fatalf("changes=maybe: %d, want 400", code)
	}
	put := func(guest string) {
		rep := hostctl.Report{Guest: guest, State: hostctl.Running, At: time.Now(), Health: []health.Result{{Check: "web", Kind: "tcp", OK: false, Failures: 1}}}
		b, _ := json.Marshal(rep)
		if _, err := ag.Cluster.Raw().Client().Put(ctx, cluster.KeyReport("n1", guest), string(b)); err != nil {
			t.Fatal(err)
		}
	}
	put("rc0") // filtered out by guest=rc1
	put("rc1")
	// readMsg reads one message (up to its blank line), skipping comments.
	readMsg := func(br *bufio.Reader) string {
		var msg strings.Builder
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("read stream: %v (so far %q)", err, msg.String())
			}
			switch {
			case l == "\n" && msg.Len() > 0:
				return msg.String()
			case l == "\n" || strings.HasPrefix(l, ":"):
			default:
				msg.WriteString(l)
			}
		}
	}
	for _, c := range []struct {
		br    *bufio.Reader
		guest string
	}{{changes, "rc0"}, {changes, "rc1"}, {one, "rc1"}} {
		want := `event: change` + "\n" + `data: {"node":"n1","guest":"` + c.guest + `"}` + "\n"
		if got := readMsg(c.br); got != want {
			t.Fatalf("stream message %q, want %q", got, want)
		}
	}
	// The plain stream sends the next event of the log, and nothing of the
	// reports before it.
	if _, err := ag.Clients["operator"].CreateGuest(ctx, map[string]any{"boot": kboot, "name": "rc2", "state": "stopped"}); err != nil {
		t.Fatal(err)
	}
	for {
		got := readMsg(plain)
		if !strings.HasPrefix(got, "id: ") || !strings.Contains(got, "event: event\n") {
			t.Fatalf("plain stream sent %q, want only events of the log", got)
		}
		if strings.Contains(got, "rc2") {
			break
		}
	}
}
