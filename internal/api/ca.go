package api

import (
	"context"
	"errors"
	"net/http"
	"sort"
	"time"

	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/pki"
	"github.com/haven-ha/haven/internal/store"
)

// CARotation is the state of the cluster CA's rotation (haven ca rotate).
type CARotation struct {
	ID      string    `json:"id"`
	Phase   string    `json:"phase"` // trust, reissue, drop, done
	OldCA   string    `json:"old_ca"`
	NewCA   string    `json:"new_ca"` // SHA-256 fingerprints
	Started time.Time `json:"started"`
	Changed time.Time `json:"changed"`
	By      string    `json:"by,omitempty"`
	// Hosts are the registered hosts: the last phase each acknowledged,
	// and whether it is online. Waiting names those the phase waits for.
	Hosts   []CARotationHost `json:"hosts"`
	Waiting []string         `json:"waiting,omitempty"`
}

// CARotationHost is one host's part in a CA rotation.
type CARotationHost struct {
	Name   string `json:"name"`
	Phase  string `json:"phase,omitempty"` // the last phase it acknowledged
	Online bool   `json:"online"`
}

func (o *Ops) registerCA() {
	o.handle("POST", "/api/v1/ca/rotate", RoleAdmin, o.handleCARotate)
	o.handle("GET", "/api/v1/ca/rotation", RoleViewer, o.handleCARotation)
}

// handleCARotate starts rotating the cluster CA: a new CA, then every
// host's agent does its part of each phase (store.CARotation). 409 while
// a rotation is under way.
func (o *Ops) handleCARotate(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	st := o.srv.Store()
	cc, err := st.ClusterConfig(ctx)
	if err != nil {
		writeErr(w, err)
		return
	}
	if cc.External {
		WriteError(w, Errorf(http.StatusConflict, "", "cluster %q uses an external etcd, which trusts the CA its admin gave it: haven ca rotate rotates only the embedded store's CA", cc.Name))
		return
	}
	now := o.now()
	ca, err := pki.NewCA(cc.Name, now)
	if err != nil {
		writeErr(w, err)
		return
	}
	rot, err := st.StartCARotation(ctx, cluster.NewID(), ca.CertPEM, ca.KeyPEM, who(r), now)
	if errors.Is(err, store.ErrRotating) {
		WriteError(w, Errorf(http.StatusConflict, "", "%v: wait for it (haven ca status)", err))
		return
	}
	if err != nil {
		writeErr(w, err)
		return
	}
	o.audit(r, "", "", "CA rotation %s started: new CA %.16s", rot.ID, pki.Fingerprint(ca.Cert))
	out, err := caRotationStatus(ctx, st)
	if err != nil {
		writeErr(w, err)
		return
	}
	WriteJSON(w, http.StatusAccepted, out)
}

func (o *Ops) handleCARotation(w http.ResponseWriter, r *http.Request) {
	out, err := caRotationStatus(r.Context(), o.srv.Store())
	if errors.Is(err, store.ErrNotFound) {
		WriteError(w, Errorf(http.StatusNotFound, "", "the cluster CA was never rotated"))
		return
	}
	if err != nil {
		writeErr(w, err)
		return
	}
	WriteJSON(w, http.StatusOK, out)
}

func caRotationStatus(ctx context.Context, st *store.Store) (*CARotation, error) {
	rot, _, err := st.CARotation(ctx)
	if err != nil {
		return nil, err
	}
	acks, err := st.CARotationAcks(ctx)
	if err != nil {
		return nil, err
	}
	regs, err := st.Nodes(ctx)
	if err != nil {
		return nil, err
	}
	live, _, err := st.LiveNodes(ctx)
	if err != nil {
		return nil, err
	}
	out := &CARotation{ID: rot.ID, Phase: rot.Phase, Started: rot.Started, Changed: rot.Changed, By: rot.By, Hosts: []CARotationHost{}}
	if c, err := pki.ParseCert([]byte(rot.OldCert)); err == nil {
		out.OldCA = pki.Fingerprint(c)
	}
	if c, err := pki.ParseCert([]byte(rot.NewCert)); err == nil {
		out.NewCA = pki.Fingerprint(c)
	}
	for _, n := range regs {
		h := CARotationHost{Name: n.Name}
		if a, ok := acks[n.Name]; ok && a.ID == rot.ID {
			h.Phase = a.Phase
		}
		_, h.Online = live[n.Name]
		out.Hosts = append(out.Hosts, h)
		if rot.Phase != store.RotationDone && h.Phase != rot.Phase {
			out.Waiting = append(out.Waiting, n.Name)
		}
	}
	sort.Slice(out.Hosts, func(i, j int) bool { return out.Hosts[i].Name < out.Hosts[j].Name })
	sort.Strings(out.Waiting)
	return out, nil
}
