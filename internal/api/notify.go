package api

import (
	"net/http"

	"github.com/haven-ha/haven/internal/notify"
)

// NotifyTestResult is the answer of POST /api/v1/notify/test.
type NotifyTestResult struct {
	Results []notify.Result `json:"results"`
}

func (o *Ops) registerNotify() {
	o.handle("GET", "/api/v1/notify", RoleAdmin, o.handleNotifyGet)
	o.handle("PUT", "/api/v1/notify", RoleAdmin, o.handleNotifyPut)
	o.handle("POST", "/api/v1/notify/test", RoleAdmin, o.handleNotifyTest)
}

func (o *Ops) handleNotifyGet(w http.ResponseWriter, r *http.Request) {
	c, err := o.cl.NotifyConfig(r.Context())
	if err != nil {
		writeErr(w, err)
		return
	}
	WriteJSON(w, http.StatusOK, c)
}

// handleNotifyPut replaces the notification configuration.
func (o *Ops) handleNotifyPut(w http.ResponseWriter, r *http.Request) {
	var c notify.Config
	if err := decodeBody(w, r, &c, false); err != nil {
		WriteError(w, err)
		return
	}
	if err := o.cl.SetNotifyConfig(r.Context(), c); err != nil {
		writeErr(w, err)
		return
	}
	o.audit(r, "", "", "set notifications: %d webhooks", len(c.Webhooks))
	WriteJSON(w, http.StatusOK, c)
}

// handleNotifyTest sends a test notification to every webhook and says
// which received it.
func (o *Ops) handleNotifyTest(w http.ResponseWriter, r *http.Request) {
	c, err := o.cl.NotifyConfig(r.Context())
	if err != nil {
		writeErr(w, err)
		return
	}
	if len(c.Webhooks) == 0 {
		WriteError(w, Errorf(http.StatusConflict, "webhooks", "no webhook configured: set one with `haven notify set --webhook URL`"))
		return
	}
	name := ""
	if cc, err := o.srv.Store().ClusterConfig(r.Context()); err == nil {
		name = cc.Name
	}
	ev := notify.Event{At: o.now(), Kind: "operator", Msg: "test notification from haven (haven notify test)"}
	res := notify.New(o.log).Send(r.Context(), c, notify.Notification{Cluster: name, Class: notify.ClassTest, Event: ev, Text: notify.Text(name, ev)})
	WriteJSON(w, http.StatusOK, NotifyTestResult{Results: res})
}
