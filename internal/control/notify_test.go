package control

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/notify"
	"github.com/haven-ha/haven/internal/notify/notifytest"
	"github.com/haven-ha/haven/internal/store/storetest"
)

// TestManagerNotifies: the events admins asked for reach their webhook (a
// receiver on loopback); the others do not.
func TestManagerNotifies(t *testing.T) {
	st := storetest.Start(t).Connect(t)
	cs := cluster.New(st)
	ctx := context.Background()
	var mu sync.Mutex
	var got []notify.Notification
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var n notify.Notification
		if err := json.NewDecoder(r.Body).Decode(&n); err != nil {
			t.Error(err)
		}
		mu.Lock()
		got = append(got, n)
		mu.Unlock()
	}))
	defer recv.Close()
	sender := notify.New(nil)
	evs := []cluster.Event{
		{Kind: "manager", Msg: "node h1 failed; fencing it before its guests run elsewhere"},
		{Kind: "fence", Node: "h1", Msg: "fence h1 (attempt 1)"},
		{Kind: "fence", Node: "h1", Msg: "fenced h1: level 1 (pdu), off, confirmed, in 160ms"},
		{Kind: "manager", Guest: "web1", Msg: "start web1 on h2 (place)"},
	}
	// No configuration: nothing is sent.
	notifyEvents(ctx, cs, sender, evs)
	sender.Wait()
	if len(got) != 0 {
		t.Fatalf("sent without a webhook: %+v", got)
	}
	if err := cs.SetNotifyConfig(ctx, notify.Config{Webhooks: []notify.Webhook{{URL: recv.URL, Classes: []string{notify.ClassFence}}}}); err != nil {
		t.Fatal(err)
	}
	notifyEvents(ctx, cs, sender, evs)
	sender.Wait()
	if len(got) != 1 || got[0].Class != notify.ClassFence || got[0].Event.Node != "h1" {
		t.Fatalf("the fence webhook got %+v; want the one fence", got)
	}
	if err := cs.SetNotifyConfig(ctx, notify.Config{Webhooks: []notify.Webhook{{URL: "gopher://x"}}}); err == nil {
		t.Error("a gopher:// webhook was accepted")
	}

	// Mail, from the same place: the fence (and only it) reaches the relay.
	relay := notifytest.Start(t, nil, false)
	mc := notify.Config{Mail: &notify.Mail{Server: relay.Addr, TLS: notify.TLSNone, From: "haven@example.com", To: []string{"ops@example.com"}, Classes: []string{notify.ClassFence}}}
	if err := cs.SetNotifyConfig(ctx, mc); err != nil {
		t.Fatal(err)
	}
	notifyEvents(ctx, cs, sender, evs)
	sender.Wait()
	msgs := relay.Messages()
	if len(msgs) != 1 || !strings.Contains(string(msgs[0].Data), "Subject: [haven ] fenced h1: level 1 (pdu), off, confirmed, in 160ms\r\n") || len(got) != 1 {
		t.Fatalf("the relay got %d mails (%+v), the old webhook %d posts; want the one fence by mail", len(msgs), msgs, len(got))
	}
}
