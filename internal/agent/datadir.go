package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/haven-ha/haven/internal/api/client"
)

// Files in an agent's data dir.
const (
	fileLock       = "lock"
	fileState      = "node.json"
	fileAdminToken = "admin.token"
	dirPKI         = "pki"
	dirStore       = "store"
)

// persisted is DATA_DIR/node.json: who this host is in which cluster.
type persisted struct {
	Cluster     string `json:"cluster"`
	ClusterID   string `json:"cluster_id"`
	Node        string `json:"node"`
	APIURL      string `json:"api_url"`
	PeerURL     string `json:"peer_url,omitempty"`
	ClientURL   string `json:"client_url,omitempty"`
	StoreMember bool   `json:"store_member"`
	External    bool   `json:"external"`
	// StoreEndpoints are client URLs of the store known at the last start.
	StoreEndpoints []string `json:"store_endpoints"`
	CAFingerprint  string   `json:"ca_fingerprint"`
	Dev            bool     `json:"dev,omitempty"`
}

// dataDir is a locked data directory.
type dataDir struct {
	path    string
	lock    *os.File
	created bool     // the directory did not exist
	before  []string // entries present before this agent wrote anything
}

// openDataDir creates (if needed) and locks dir. A second agent on the same
// dir gets an error naming the holder.
func openDataDir(dir string) (*dataDir, error) {
	d := &dataDir{path: dir}
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		d.created = true
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir %s: %w", dir, err)
	}
	// A data dir another user made (a /tmp/haven-dev planted before
	// `agent --dev`) would hand them this agent's keys and tokens.
	if err := client.CheckTrusted(dir, true); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read data dir %s: %w", dir, err)
	}
	for _, e := range ents {
		d.before = append(d.before, e.Name())
	}
	f, err := os.OpenFile(filepath.Join(dir, fileLock), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock of data dir %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		b, _ := os.ReadFile(f.Name())
		f.Close()
		holder := strings.TrimSpace(string(b))
		if holder == "" {
			holder = "unknown"
		}
		return nil, fmt.Errorf("data dir %s is in use by another haven agent (pid %s); stop it or use another --data-dir", dir, holder)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	d.lock = f
	return d, nil
}

func (d *dataDir) file(parts ...string) string {
	return filepath.Join(append([]string{d.path}, parts...)...)
}

// load reads node.json; ok is false when the dir holds no cluster yet.
func (d *dataDir) load() (p persisted, ok bool, err error) {
	b, err := os.ReadFile(d.file(fileState))
	if errors.Is(err, os.ErrNotExist) {
		return p, false, nil
	}
	if err != nil {
		return p, false, fmt.Errorf("read %s: %w", d.file(fileState), err)
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return p, false, fmt.Errorf("read %s: %w; the data dir is damaged", d.file(fileState), err)
	}
	return p, true, nil
}

func (d *dataDir) save(p persisted) error {
	b, _ := json.MarshalIndent(p, "", "  ")
	return writeFileAtomic(d.file(fileState), append(b, '\n'), 0o600)
}

// empty reports whether the dir held nothing (but maybe our lock) before.
func (d *dataDir) empty() bool {
	for _, n := range d.before {
		if n != fileLock {
			return false
		}
	}
	return true
}

// discard removes what this agent wrote, so a failed init or join leaves
// nothing behind; the dir itself goes if this agent created it.
func (d *dataDir) discard() {
	ents, _ := os.ReadDir(d.path)
	keep := map[string]bool{}
	for _, n := range d.before {
		keep[n] = true
	}
	for _, e := range ents {
		if !keep[e.Name()] && e.Name() != fileLock {
			os.RemoveAll(filepath.Join(d.path, e.Name()))
		}
	}
	if !keep[fileLock] {
		os.Remove(d.file(fileLock))
	}
	if d.created {
		os.Remove(d.path)
	}
	d.unlock()
}

func (d *dataDir) unlock() {
	if d.lock != nil {
		d.lock.Close()
		d.lock = nil
	}
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
