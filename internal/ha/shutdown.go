package ha

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/control"
	"github.com/haven-ha/haven/internal/store"
)

// A graceful host shutdown or reboot, as the host's shutdown sequence runs
// it (for example a systemd unit's ExecStop before the agent stops):
//
//	haven node shutdown NAME [--reboot] --wait
//
// The agent records the shutdown; the manager applies the cluster's shutdown
// policy (migrate the guests away, stop them, or freeze them) and says when
// the host is empty; the command returns then and the host goes down. Its
// agent leaves the cluster cleanly, so the host is not fenced. When the host's
// agent starts again the shutdown is over: guests that left come back as
// after maintenance.

// ShutdownRequest is the body of POST /api/v1/nodes/{name}/shutdown.
type ShutdownRequest struct {
	Reboot bool `json:"reboot"`
}

// ShutdownStatus answers the shutdown endpoints.
type ShutdownStatus struct {
	Node      string    `json:"node"`
	Shutdown  bool      `json:"shutdown"`          // a shutdown is recorded
	Reboot    bool      `json:"reboot"`            // it is a reboot
	Ready     bool      `json:"ready"`             // the manager says the host is empty
	ReadyAt   time.Time `json:"ready_at,omitzero"` // when
	Requested time.Time `json:"requested,omitzero"`
}

type shutdownRecord struct {
	control.Shutdown
	At time.Time `json:"at"`
}

func registerShutdown(srv *api.Server, st *store.Store) {
	srv.HandleFunc("POST", "/api/v1/nodes/{name}/shutdown", api.RoleOperator, func(w http.ResponseWriter, r *http.Request) {
		var req ShutdownRequest
		if err := api.DecodeJSON(w, r, &req); err != nil {
			api.WriteError(w, err)
			return
		}
		name := r.PathValue("name")
		if _, err := st.Node(r.Context(), name); err != nil {
			api.WriteError(w, api.Errorf(http.StatusNotFound, "name", "no host named %q in this cluster", name))
			return
		}
		rec := shutdownRecord{Shutdown: control.Shutdown{Reboot: req.Reboot}, At: time.Now().UTC()}
		key := cluster.PrefixShutdown + name
		if _, err := st.Client().Put(r.Context(), key, store.MustEncode(key, rec)); err != nil {
			api.WriteError(w, fmt.Errorf("record the shutdown of %q: %w", name, err))
			return
		}
		_ = cluster.New(st).AddEvent(r.Context(), cluster.Event{Kind: "operator", Node: name, Who: callerName(r),
			Msg: fmt.Sprintf("graceful %s of %s requested", map[bool]string{true: "reboot", false: "shutdown"}[req.Reboot], name)})
		s, err := shutdownStatus(r.Context(), st, name)
		if err != nil {
			api.WriteError(w, err)
			return
		}
		api.WriteJSON(w, http.StatusAccepted, s)
	})
	srv.HandleFunc("GET", "/api/v1/nodes/{name}/shutdown", api.RoleViewer, func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		if _, err := st.Node(r.Context(), name); err != nil {
			api.WriteError(w, api.Errorf(http.StatusNotFound, "name", "no host named %q in this cluster", name))
			return
		}
		s, err := shutdownStatus(r.Context(), st, name)
		if err != nil {
			api.WriteError(w, err)
			return
		}
		api.WriteJSON(w, http.StatusOK, s)
	})
}

func callerName(r *http.Request) string {
	if c := api.Caller(r); c != nil {
		if c.Name != "" {
			return c.Name
		}
		return c.ID
	}
	return ""
}

func shutdownStatus(ctx context.Context, st *store.Store, name string) (ShutdownStatus, error) {
	resp, err := st.Client().Txn(ctx).Then(
		clientv3.OpGet(cluster.PrefixShutdown+name),
		clientv3.OpGet(cluster.PrefixShutdownReady+name),
	).Commit()
	if err != nil {
		return ShutdownStatus{}, fmt.Errorf("read the shutdown of %q: %w", name, err)
	}
	s := ShutdownStatus{Node: name}
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 {
		var rec shutdownRecord
		if err := store.Decode(string(kvs[0].Key), kvs[0].Value, &rec); err != nil {
			return ShutdownStatus{}, err
		}
		s.Shutdown, s.Reboot, s.Requested = true, rec.Reboot, rec.At
	}
	if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) == 1 {
		s.Ready = true
		s.ReadyAt, _ = time.Parse(time.RFC3339Nano, string(kvs[0].Value))
	}
	return s, nil
}

// clearShutdown ends a recorded shutdown when the node's agent starts: the
// host is back.
func clearShutdown(ctx context.Context, st *store.Store, node string) error {
	_, err := st.Client().Txn(ctx).Then(
		clientv3.OpDelete(cluster.PrefixShutdown+node),
		clientv3.OpDelete(cluster.PrefixShutdownReady+node),
	).Commit()
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("clear the shutdown record of %q: %w", node, err)
	}
	return nil
}
