package hostagent

// The quorum-loss notification. Without store quorum no manager runs, so
// the agents that notice send it themselves: each agent whose node lease
// goes unconfirmed (its store member cannot reach a quorum) posts one
// notification of class "quorum" per incident to the webhooks and the mail
// receiver of the notification configuration. That configuration cannot be
// read without quorum, so every agent caches the last one it read (with the
// cluster's name) in its data directory (mode 0600, like the host's key:
// the cache holds the configuration's secrets). The incident ends when the
// lease is confirmed again; the incident in progress is recorded on disk
// too, so an agent restarted during the incident does not notify again.

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/haven-ha/haven/internal/notify"
)

// notifyCache is the notification configuration as last read from the
// store, with the cluster's name.
type notifyCache struct {
	Cluster string        `json:"cluster"`
	Config  notify.Config `json:"config"`
	// Alarmed is when the quorum-loss incident in progress was notified;
	// zero when there is none.
	Alarmed time.Time `json:"alarmed,omitzero"`
}

// quorumAlarm sends the quorum-loss notification, once per incident.
type quorumAlarm struct {
	node   string
	path   string // the cache file; "" keeps it in memory only
	log    *slog.Logger
	sender *notify.Sender

	mu    sync.Mutex
	cache notifyCache
}

func newQuorumAlarm(node, dataDir string, log *slog.Logger) *quorumAlarm {
	a := &quorumAlarm{node: node, log: log, sender: notify.New(log)}
	if dataDir != "" {
		a.path = filepath.Join(dataDir, "notify-cache.json")
		if b, err := os.ReadFile(a.path); err == nil {
			if err := json.Unmarshal(b, &a.cache); err != nil {
				log.Warn("ignoring unreadable notification cache", "file", a.path, "err", err)
				a.cache = notifyCache{}
			}
		}
	}
	return a
}

// remember caches the configuration read from the store.
func (a *quorumAlarm) remember(cluster string, cfg notify.Config) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.cache.Cluster, a.cache.Config = cluster, cfg
	a.saveLocked()
}

func (a *quorumAlarm) saveLocked() {
	if a.path == "" {
		return
	}
	b, _ := json.Marshal(a.cache)
	tmp := a.path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		a.log.Warn("notification cache not saved", "err", err)
		return
	}
	if err := os.Rename(tmp, a.path); err != nil {
		a.log.Warn("notification cache not saved", "err", err)
	}
}

// observe is called on every check of the lease: cut is whether the
// lease is overdue (the store has no quorum for this host), since when the
// last renewal request went out. It sends the notification at the first
// observation of an incident and reports whether it did.
func (a *quorumAlarm) observe(now, since time.Time, cut bool) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !cut {
		if !a.cache.Alarmed.IsZero() {
			a.cache.Alarmed = time.Time{}
			a.saveLocked()
			a.log.Info("store quorum back: the quorum-loss incident is over", "op", "notify")
		}
		return false
	}
	if !a.cache.Alarmed.IsZero() {
		return false // this incident was notified already
	}
	a.cache.Alarmed = now
	a.saveLocked()
	ev := notify.Event{At: now, Kind: "quorum", Node: a.node,
		Msg: fmt.Sprintf("host %s lost the store's quorum: its lease is not confirmed since %s; no manager can act (no failover) until quorum is back", a.node, since.UTC().Format(time.RFC3339))}
	if a.cache.Config.Empty() {
		a.log.Warn("store quorum lost; no webhook or mail to notify", "op", "notify")
		return false
	}
	a.log.Warn("store quorum lost: notifying", "op", "notify", "webhooks", len(a.cache.Config.Webhooks), "mail", a.cache.Config.Mail != nil)
	a.sender.SendAsync(a.cache.Config, notify.Notification{Cluster: a.cache.Cluster, Class: notify.ClassQuorum, Event: ev, Text: notify.Text(a.cache.Cluster, ev)})
	return true
}

// readNotify refreshes the cached configuration (quorum reads: the cache
// keeps the last one when the store cannot answer).
func (h *Host) readNotify(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	cfg, err := h.cfg.Cluster.NotifyConfig(ctx)
	if err != nil {
		return
	}
	name := ""
	if cc, err := h.cfg.Cluster.Raw().ClusterConfig(ctx); err == nil {
		name = cc.Name
	}
	h.alarm.remember(name, cfg)
}
