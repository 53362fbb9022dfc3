package notify

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

func TestClassify(t *testing.T) {
	for _, tt := range []struct {
		e    Event
		want string
	}{
		{Event{Kind: "fence", Node: "h1", Msg: "fenced h1: level 1 (pdu), off, confirmed, in 160ms"}, ClassFence},
		{Event{Kind: "fence", Node: "h1", Msg: "fencing h1 failed: timeout"}, ClassFence},
		{Event{Kind: "fence", Node: "h1", Msg: "fence h1 (attempt 1)"}, ""},
		{Event{Kind: "manager", Msg: "node h1 failed; fencing it before its guests run elsewhere"}, ClassNodeFailed},
		{Event{Kind: "manager", Msg: "web1 failed to start on h2: no disk"}, ClassGuestFailed},
		{Event{Kind: "manager", Msg: "web1 could not be stopped on h2 (timeout): failed, still running there"}, ClassGuestFailed},
		{Event{Kind: "manager", Msg: "admission: db1 does not fit on any host"}, ClassAdmission},
		{Event{Kind: "manager", Msg: "start web1 on h2 (place)"}, ""},
		{Event{Kind: "manager", Msg: "migration of web1 from h1 to h2 finished in 2s"}, ""},
	} {
		got, ok := Classify(tt.e)
		if got != tt.want || ok != (tt.want != "") {
			t.Errorf("Classify(%q) = %q, %v; want %q", tt.e.Msg, got, ok, tt.want)
		}
	}
}

func TestCheck(t *testing.T) {
	for _, c := range []Config{
		{Webhooks: []Webhook{{URL: "ftp://x"}}},
		{Webhooks: []Webhook{{URL: "http://x", Classes: []string{"fences"}}}},
		{Webhooks: []Webhook{{URL: "nohost"}}},
	} {
		if c.Check() == nil {
			t.Errorf("Check(%+v) accepted it", c)
		}
	}
	if err := (Config{Webhooks: []Webhook{{URL: "https://h/x", Classes: []string{ClassFence}}}}).Check(); err != nil {
		t.Error(err)
	}
}

// receiver is a webhook on loopback that records what it receives.
type receiver struct {
	mu   sync.Mutex
	got  []Notification
	auth []string
}

func (r *receiver) serve(t *testing.T, status int) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var n Notification
		if err := json.NewDecoder(req.Body).Decode(&n); err != nil {
			t.Errorf("webhook body: %v", err)
		}
		r.mu.Lock()
		r.got = append(r.got, n)
		r.auth = append(r.auth, req.Header.Get("Authorization"))
		r.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(s.Close)
	return s
}

func TestSend(t *testing.T) {
	var all, fences, broken receiver
	sAll, sFence, sBroken := all.serve(t, 200), fences.serve(t, 204), broken.serve(t, 500)
	cfg := Config{Webhooks: []Webhook{
		{URL: sAll.URL, Header: "Bearer tok"},
		{URL: sFence.URL, Classes: []string{ClassFence}},
		{URL: sBroken.URL},
	}}
	s := New(nil)
	ev := Event{Kind: "manager", Msg: "node h1 failed"}
	res := s.Send(context.Background(), cfg, Notification{Cluster: "c", Class: ClassNodeFailed, Event: ev, Text: Text("c", ev)})
	if len(res) != 2 {
		t.Fatalf("results %+v; want the two webhooks that take node-failed", res)
	}
	for _, r := range res {
		if (r.URL == sBroken.URL) == r.OK {
			t.Errorf("result %+v", r)
		}
	}
	if len(all.got) != 1 || all.got[0].Class != ClassNodeFailed || all.got[0].Text != "[haven c] node h1 failed" || all.auth[0] != "Bearer tok" {
		t.Errorf("the all-classes webhook got %+v %v", all.got, all.auth)
	}
	if len(fences.got) != 0 {
		t.Errorf("the fence-only webhook got %+v", fences.got)
	}
	s.SendAsync(cfg, Notification{Class: ClassFence, Event: Event{Msg: "fenced h1: ok"}})
	s.Wait()
	if len(fences.got) != 1 || len(all.got) != 2 {
		t.Errorf("after a fence: fence-only got %d, all got %d", len(fences.got), len(all.got))
	}
}
