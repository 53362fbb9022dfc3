package store

// The store's administration: membership changes, snapshots, users and
// roles, and turning the roles on need etcd's root user once the store's
// roles are enforced (etcd refuses them to any other user). An agent does
// them with a root credential of its own making: a certificate with CN
// RootUser, signed in memory with the cluster CA's key (sealed in the store
// with the cluster secret key, which every current host can open), valid
// for rootTTL and never written to disk.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/auth"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc/status"

	"github.com/haven-ha/haven/internal/pki"
)

// rootTTL is how long a root credential is valid: long enough for one
// administrative call (a learner's promotion waits up to a minute).
const rootTTL = 10 * time.Minute

// IsDenied reports whether err is the store refusing a request for want of
// permission (its roles are enforced and the user may not).
func IsDenied(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(rpctypes.Error(err), rpctypes.ErrPermissionDenied) {
		return true
	}
	// An older etcd (3.4, Debian's) answers a snapshot with its auth
	// store's own error rather than the gRPC one.
	var gs interface{ GRPCStatus() *status.Status }
	return errors.As(err, &gs) && gs.GRPCStatus().Message() == auth.ErrPermissionDenied.Error()
}

// rootClient opens a client to the store's current endpoints that
// authenticates as RootUser.
func (s *Store) rootClient(ctx context.Context) (*clientv3.Client, error) {
	if s.tls == nil {
		return nil, errors.New("act as the store's root: the store is reached without TLS")
	}
	caPEM, caKey, err := s.CA(ctx)
	if err != nil {
		return nil, fmt.Errorf("act as the store's root: %w", err)
	}
	ca, err := pki.LoadCA(caPEM, caKey)
	if err != nil {
		return nil, fmt.Errorf("act as the store's root: %w", err)
	}
	cert, err := ca.IssueClient(RootUser, rootTTL, time.Now())
	if err != nil {
		return nil, fmt.Errorf("act as the store's root: %w", err)
	}
	cfg := s.tls.Clone()
	if s.dynTLS != nil {
		cfg = s.dynTLS() // the trust bundle of the moment (a CA rotation)
	}
	cfg.Certificates = []tls.Certificate{cert}
	cfg.GetClientCertificate = nil
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   s.cli.Endpoints(),
		TLS:         cfg,
		DialTimeout: 5 * time.Second,
		Logger:      slogZap(s.log, zapcore.ErrorLevel, "etcd-client"),
		Context:     context.WithoutCancel(ctx),
	})
	if err != nil {
		return nil, fmt.Errorf("act as the store's root: connect: %w", err)
	}
	return cli, nil
}

// asRoot runs fn with a client allowed to administer the store. In the
// embedded store that is always root. An external etcd is administered by
// its operator: fn runs with this host's own client, and only if the store
// refuses it (its roles are on, `haven store roles`) is it tried as root,
// which works where that etcd trusts the cluster CA. fn must not have
// done anything when it fails for want of permission. Without a root
// credential (this host cannot open the CA key) fn runs with the host's
// own client, which the store allows only while its roles are off.
func (s *Store) asRoot(ctx context.Context, fn func(*clientv3.Client) error) error {
	var own error
	if !s.embedded {
		if own = fn(s.cli); own == nil || !IsDenied(own) {
			return own
		}
	}
	rc, err := s.rootClient(ctx)
	if err != nil && s.embedded {
		// No root credential (this host does not hold the cluster secret
		// key yet): enough while the roles are not enforced.
		if own = fn(s.cli); own == nil {
			return nil
		}
	} else if err == nil {
		defer rc.Close()
		err = fn(rc)
	}
	if own != nil && err != nil {
		return fmt.Errorf("%w (and as the store's root: %v)", own, err)
	}
	return err
}

// GrantHost gives node its store user and roles (GrantHost), as root. It
// is idempotent; a host joining the embedded store gets them before it
// first connects, whether the roles are enforced yet or not.
func (s *Store) GrantHost(ctx context.Context, node string) error {
	return s.asRoot(ctx, func(cli *clientv3.Client) error { return GrantHost(ctx, cli, node) })
}

// RevokeHost deletes node's store user and role (RevokeHost), as root.
func (s *Store) RevokeHost(ctx context.Context, node string) error {
	return s.asRoot(ctx, func(cli *clientv3.Client) error { return RevokeHost(ctx, cli, node) })
}

// EnforceRoles turns the store's roles on (EnforceRoles) with a user for
// every host in hosts, as root.
func (s *Store) EnforceRoles(ctx context.Context, hosts []string) error {
	return s.asRoot(ctx, func(cli *clientv3.Client) error { return EnforceRoles(ctx, cli, hosts) })
}

// RolesEnforced reports whether the store checks its roles (etcd's
// authentication is on). Any host may ask.
func (s *Store) RolesEnforced(ctx context.Context) (bool, error) {
	resp, err := s.cli.AuthStatus(ctx)
	if err != nil {
		return false, fmt.Errorf("read whether the store's roles are enforced: %w", err)
	}
	return resp.Enabled, nil
}
