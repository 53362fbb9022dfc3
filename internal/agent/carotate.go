package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/heartbeat"
	"github.com/haven-ha/haven/internal/pki"
	"github.com/haven-ha/haven/internal/store"
)

// The host's part in a rotation of the cluster CA (store.CARotation, haven
// ca rotate): in each phase it makes DATA/pki/ca.crt the phase's trust
// bundle (the API, the store client and peer connections read it at every
// handshake), restarts its store member when the member was started with
// another bundle (etcd reads its trusted CAs only when it starts; members
// take turns, so the store keeps its quorum), from reissue on has its
// certificate re-issued by the new CA, and acknowledges. Once every
// registered host acknowledged a phase, any agent moves the rotation on.

// caRotationPoll is how often the loop looks without a store event.
const caRotationPoll = 5 * time.Second

// trustPEM is the host's trust bundle (one CA, two during a rotation).
func (a *Agent) trustPEM() []byte {
	a.certMu.Lock()
	defer a.certMu.Unlock()
	return a.caPEM
}

// PeerTLS is a client TLS configuration to reach other hosts: the current
// trust bundle and this host's current certificate. Take a new one for
// each connection: both change (CA rotation, renewal).
func (a *Agent) PeerTLS() *tls.Config {
	pool, err := pki.Pool(a.trustPEM())
	if err != nil {
		a.log.Error("no trusted CA", "op", "pki", "err", err)
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12, CipherSuites: pki.AEADSuites, RootCAs: pool,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return a.tlsPair() },
	}
}

// caRotationLoop does this host's part of CA rotations until ctx ends.
func (a *Agent) caRotationLoop(ctx context.Context) {
	if a.state.External {
		return
	}
	step := func() {
		if err := a.caRotationStep(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("CA rotation: this host's part failed; trying again", "op", "pki", "err", err)
		}
	}
	for ctx.Err() == nil {
		step()
		wctx, cancel := context.WithTimeout(ctx, caRotationPoll)
		wch := a.st.Client().Watch(clientv3.WithRequireLeader(wctx), store.KeyCARotation, clientv3.WithPrefix())
		for range wch {
			step()
		}
		cancel()
	}
}

// caRotationStep brings this host to the rotation's phase, acknowledges
// it, and moves the rotation on when every host did.
func (a *Agent) caRotationStep(ctx context.Context) error {
	rot, rev, err := a.st.CARotation(ctx)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	want := rot.Trust()
	if !bytes.Equal(a.trustPEM(), want) {
		if err := a.setTrust(want); err != nil {
			return err
		}
		a.log.Info("CA rotation: trust bundle updated", "op", "pki", "rotation", rot.ID, "phase", rot.Phase)
	}
	if a.state.StoreMember && !bytes.Equal(a.memberStartedWith(), want) {
		done, err := a.restartMemberForTrust(ctx, rot)
		if err != nil || !done {
			return err
		}
	}
	if rot.Phase == store.RotationReissue || rot.Phase == store.RotationDrop {
		newCA, err := pki.ParseCert([]byte(rot.NewCert))
		if err != nil {
			return fmt.Errorf("CA rotation %s: the new CA: %w", rot.ID, err)
		}
		cert, err := a.hostCert()
		if err != nil {
			return err
		}
		if cert.CheckSignatureFrom(newCA) != nil {
			if err := a.reissue(ctx, "re-issued by the new CA"); err != nil {
				return fmt.Errorf("CA rotation %s: %w", rot.ID, err)
			}
		}
	}
	if rot.Phase == store.RotationDone {
		return nil
	}
	acks, err := a.st.CARotationAcks(ctx)
	if err != nil {
		return err
	}
	if ack, ok := acks[a.cfg.Node]; !ok || ack.ID != rot.ID || ack.Phase != rot.Phase {
		if err := a.st.AckCARotation(ctx, a.cfg.Node, rot, a.now()); err != nil {
			return err
		}
		a.log.Info("CA rotation: this host's part done", "op", "pki", "rotation", rot.ID, "phase", rot.Phase)
		acks[a.cfg.Node] = store.CARotationAck{ID: rot.ID, Phase: rot.Phase}
	}
	regs, err := a.st.Nodes(ctx)
	if err != nil {
		return err
	}
	for _, n := range regs {
		if ack, ok := acks[n.Name]; !ok || ack.ID != rot.ID || ack.Phase != rot.Phase {
			return nil // waits for n
		}
	}
	next, err := a.st.AdvanceCARotation(ctx, rot, rev, a.now())
	if errors.Is(err, store.ErrConflict) {
		return nil // another agent moved it
	}
	if err != nil {
		return err
	}
	a.log.Info("CA rotation: every host did its part; next phase", "op", "pki", "rotation", rot.ID, "phase", next.Phase)
	msg := fmt.Sprintf("CA rotation %s: every host did phase %s; now %s", rot.ID, rot.Phase, next.Phase)
	if next.Phase == store.RotationDone {
		msg = fmt.Sprintf("CA rotation %s done: every host trusts and presents the new CA only", rot.ID)
	}
	if err := cluster.New(a.st).AddEvent(ctx, cluster.Event{At: a.now(), Kind: "node", Node: a.cfg.Node, Msg: msg}); err != nil {
		a.log.Warn("CA rotation: record the event", "op", "pki", "err", err)
	}
	return nil
}

// setTrust makes bundle this host's trust bundle: DATA/pki/ca.crt (the
// store member reads it when it starts, the CLI and QEMU guests when they
// start) and what every new TLS handshake uses.
func (a *Agent) setTrust(bundle []byte) error {
	cas, err := pki.ParseCerts(bundle)
	if err != nil {
		return fmt.Errorf("CA rotation: trust bundle: %w", err)
	}
	caFile, _, _ := a.TLSFiles()
	if err := writeFileAtomic(caFile, bundle, 0o644); err != nil {
		return err
	}
	a.certMu.Lock()
	a.caPEM = bundle
	a.certMu.Unlock()
	// The cluster's CA is the first of the bundle: the new one.
	if fp := pki.Fingerprint(cas[0]); fp != a.state.CAFingerprint {
		a.state.CAFingerprint = fp
		if err := a.dir.save(a.state); err != nil {
			return fmt.Errorf("CA rotation: record the CA: %w", err)
		}
	}
	return nil
}

// memberStartedWith is the trust bundle the store member was started with.
func (a *Agent) memberStartedWith() []byte {
	a.certMu.Lock()
	defer a.certMu.Unlock()
	return a.memberTrust
}

// restartMemberForTrust restarts this host's store member, when its turn
// comes, so that it reads the trust bundle. It reports whether it did.
func (a *Agent) restartMemberForTrust(ctx context.Context, rot store.CARotation) (bool, error) {
	// With another member down, this one's restart would cost the store
	// its quorum: wait for it to be back (or its host removed).
	live, _, err := a.st.LiveNodes(ctx)
	if err != nil {
		return false, err
	}
	alive := func(node string) bool {
		if _, ok := live[node]; !ok {
			return false
		}
		// The direct heartbeats see a host die within a second, its live
		// key only when its lease ends.
		return a.hb == nil || a.hb.Verdict(node).State == heartbeat.Alive
	}
	if err := a.st.OtherMembersUp(ctx, a.cfg.Node, alive); err != nil {
		a.caRestartWaits.Add(1)
		a.log.Info("CA rotation: store member restart waits", "op", "pki", "rotation", rot.ID, "why", err)
		return false, nil
	}
	holder, err := a.st.LockCARestart(ctx, a.cfg.Node, a.live.Lease())
	if err != nil {
		return false, err
	}
	if holder != a.cfg.Node {
		a.log.Debug("CA rotation: waiting for the store member of another host to restart", "op", "pki", "holder", holder)
		return false, nil
	}
	t0 := time.Now()
	err = a.st.RestartMember(ctx, func(ctx context.Context) (*store.EmbeddedMember, error) {
		sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		return a.startEmbedded(sctx, "", true)
	})
	if err != nil {
		// The turn stays ours: the next step tries the start again.
		return false, fmt.Errorf("CA rotation %s: %w", rot.ID, err)
	}
	if err := a.st.UnlockCARestart(ctx, a.cfg.Node); err != nil {
		a.log.Warn("CA rotation: give the restart turn back", "op", "pki", "err", err)
	}
	a.log.Info("CA rotation: store member restarted with the trust bundle", "op", "pki", "rotation", rot.ID, "phase", rot.Phase, "took", time.Since(t0).Round(time.Millisecond))
	return true, nil
}

// readTrustFile reads the trust bundle the store member will start with.
func (a *Agent) readTrustFile() []byte {
	caFile, _, _ := a.TLSFiles()
	b, _ := os.ReadFile(caFile)
	return b
}
