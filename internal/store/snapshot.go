package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/schema"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
)

// Snapshot streams a consistent snapshot of the store (etcd's backend
// database followed by its SHA-256) from the member the client talks to.
// It is taken as root (asRoot).
func (s *Store) Snapshot(ctx context.Context, w io.Writer) (int64, error) {
	var n int64
	err := s.asRoot(ctx, func(cli *clientv3.Client) error {
		rc, err := cli.Snapshot(ctx)
		if err != nil {
			return err
		}
		defer rc.Close()
		n, err = io.Copy(w, rc)
		if n > 0 && IsDenied(err) {
			// Not refused at the start: not to be tried again.
			return fmt.Errorf("interrupted: %v", err)
		}
		return err
	})
	if err != nil {
		return n, fmt.Errorf("store snapshot: %w", err)
	}
	return n, nil
}

// SnapshotInfo is what VerifySnapshot found in a snapshot file.
type SnapshotInfo struct {
	Bytes    int64          `json:"bytes"`
	Revision int64          `json:"revision"` // the store revision the snapshot was taken at
	Keys     int            `json:"keys"`     // live keys
	Haven    int            `json:"haven_keys"`
	Cluster  *ClusterConfig `json:"cluster,omitempty"` // the Haven cluster it belongs to
}

// VerifySnapshot checks a snapshot file written by Snapshot: its SHA-256
// trailer matches its content, the database opens and its pages are
// consistent (bbolt's check), and it holds a Haven cluster's configuration.
func VerifySnapshot(path string) (SnapshotInfo, error) {
	var info SnapshotInfo
	data, err := os.ReadFile(path)
	if err != nil {
		return info, fmt.Errorf("verify snapshot: %w", err)
	}
	info.Bytes = int64(len(data))
	if len(data) < sha256.Size+512 {
		return info, fmt.Errorf("verify snapshot %s: %d bytes is too short for a store snapshot", path, len(data))
	}
	db, sum := data[:len(data)-sha256.Size], data[len(data)-sha256.Size:]
	if got := sha256.Sum256(db); !bytes.Equal(got[:], sum) {
		return info, fmt.Errorf("verify snapshot %s: SHA-256 mismatch: the file is damaged or incomplete", path)
	}
	// bbolt needs a file: check a copy without the trailer.
	tmp, err := os.CreateTemp("", "haven-snapshot-*.db")
	if err != nil {
		return info, fmt.Errorf("verify snapshot: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(db); err != nil {
		tmp.Close()
		return info, fmt.Errorf("verify snapshot: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return info, fmt.Errorf("verify snapshot: %w", err)
	}
	bdb, err := bolt.Open(tmp.Name(), 0o600, &bolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		return info, fmt.Errorf("verify snapshot %s: open the database: %w", path, err)
	}
	defer bdb.Close()
	err = bdb.View(func(tx *bolt.Tx) error {
		var errs []error
		for e := range tx.Check() {
			errs = append(errs, e)
		}
		if len(errs) > 0 {
			return fmt.Errorf("database inconsistent: %w", errors.Join(errs...))
		}
		b := tx.Bucket([]byte("key"))
		if b == nil {
			return errors.New("no key bucket: not an etcd database")
		}
		// Keys are revisions in order; the last version of each key
		// decides whether it is live.
		live := map[string]*mvccpb.KeyValue{}
		tomb := func(k []byte) bool { return len(k) == 18 && k[17] == 't' }
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			kv := &mvccpb.KeyValue{}
			if err := proto.Unmarshal(v, kv); err != nil {
				return fmt.Errorf("revision entry %x: %w", k, err)
			}
			info.Revision = max(info.Revision, kv.ModRevision)
			if tomb(k) {
				delete(live, string(kv.Key))
				continue
			}
			live[string(kv.Key)] = kv
		}
		info.Keys = len(live)
		for k := range live {
			if len(k) >= len(Prefix) && k[:len(Prefix)] == Prefix {
				info.Haven++
			}
		}
		if kv, ok := live[KeyClusterConfig]; ok {
			var cc ClusterConfig
			if err := Decode(KeyClusterConfig, kv.Value, &cc); err != nil {
				return err
			}
			info.Cluster = &cc
		}
		return nil
	})
	if err != nil {
		return info, fmt.Errorf("verify snapshot %s: %w", path, err)
	}
	if info.Cluster == nil {
		return info, fmt.Errorf("verify snapshot %s: no Haven cluster configuration (%s) in it", path, KeyClusterConfig)
	}
	return info, nil
}

// RolesOffInDataDir turns the store roles off (etcd's authentication) in
// the etcd data directory dir, restored from a backup and not started yet:
// for an etcd that will not authenticate Haven's hosts by their cluster
// certificates. Users and roles stay; `etcdctl auth enable` turns them on
// again, and the embedded store's manager does by itself.
func RolesOffInDataDir(dir string) error {
	path := filepath.Join(dir, "member", "snap", "db")
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("turn the store roles off in %s: %w", dir, err)
	}
	be := backend.NewDefaultBackend(zap.NewNop(), path)
	ab := schema.NewAuthBackend(zap.NewNop(), be)
	tx := ab.BatchTx()
	tx.Lock()
	tx.UnsafeSaveAuthEnabled(false)
	tx.Unlock()
	ab.ForceCommit()
	if err := be.Close(); err != nil {
		return fmt.Errorf("turn the store roles off in %s: %w", dir, err)
	}
	return nil
}
