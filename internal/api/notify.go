package api

import (
	"net/http"
	"strings"

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
	WriteJSON(w, http.StatusOK, c.Redacted())
}

// handleNotifyPut replaces the notification configuration. A secret sent
// back as notify.Redacted (what a GET shows) keeps the stored one of the
// same receiver.
func (o *Ops) handleNotifyPut(w http.ResponseWriter, r *http.Request) {
	var c notify.Config
	if err := decodeBody(w, r, &c, false); err != nil {
		WriteError(w, err)
		return
	}
	old, err := o.cl.NotifyConfig(r.Context())
	if err != nil {
		writeErr(w, err)
		return
	}
	if c, err = c.KeepSecrets(old); err != nil {
		WriteError(w, Errorf(http.StatusBadRequest, notify.Field(err), "%v", err))
		return
	}
	if err := o.cl.SetNotifyConfig(r.Context(), c); err != nil {
		writeErr(w, err)
		return
	}
	mail := "no mail"
	if c.Mail != nil {
		mail = "mail to " + strings.Join(c.Mail.To, ", ") + " via " + c.Mail.Server
	}
	o.audit(r, "", "", "set notifications: %d webhooks, %s", len(c.Webhooks), mail)
	WriteJSON(w, http.StatusOK, c.Redacted())
}

// handleNotifyTest sends a test notification to every webhook and to the
// mail receiver, and says which received it.
func (o *Ops) handleNotifyTest(w http.ResponseWriter, r *http.Request) {
	c, err := o.cl.NotifyConfig(r.Context())
	if err != nil {
		writeErr(w, err)
		return
	}
	if c.Empty() {
		WriteError(w, Errorf(http.StatusConflict, "webhooks", "no webhook or mail configured: set one with `haven notify set --webhook URL` or `--mail-server HOST:PORT`"))
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
