package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"
)

// Snapshot streams a consistent snapshot of the store (etcd's backend
// database followed by its SHA-256) from the member the client talks to.
func (s *Store) Snapshot(ctx context.Context, w io.Writer) (int64, error) {
	rc, err := s.cli.Snapshot(ctx)
	if err != nil {
		return 0, fmt.Errorf("store snapshot: %w", err)
	}
	defer rc.Close()
	n, err := io.Copy(w, rc)
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
