// Package storage owns Haven's storage pools: where guest disks live, whether
// every host really sees the same storage (marker files), free space, volume
// creation, turning pool+volume disks into paths, and deciding whether a
// guest can fail over (all its disks on shared pools).
//
// A pool is either a directory mounted at the same path on every host (NFS,
// a cluster filesystem, or a local directory for guests that stay put), or
// an LVM volume group (shared SAN LUN) whose logical volumes are the guests'
// disks.
package storage

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/haven-ha/haven/internal/guestdef"
)

// Kind is a pool's kind.
type Kind string

const (
	KindDir Kind = "dir" // a directory at Path on every host
	KindLVM Kind = "lvm" // an LVM volume group VG; volumes are /dev/VG/NAME
)

// Pool is a named place for guest disks.
type Pool struct {
	Name string `json:"name"`
	Kind Kind   `json:"kind"`           // dir (default) | lvm
	Path string `json:"path,omitempty"` // dir: mounted at this path on every host
	VG   string `json:"vg,omitempty"`   // lvm: volume group name
	// Shared says every host sees the same storage, so a guest on it can
	// start anywhere. Agents verify it with marker files (VerifyShared).
	Shared bool `json:"shared"`
	// Devices marks a dir pool whose entries are block devices (an admin's
	// statement, e.g. /dev/disk/by-id): guests may use them as raw disks.
	// Block devices come only from such a pool or an LVM pool.
	Devices bool `json:"devices,omitempty"`
}

func (p Pool) kind() Kind {
	if p.Kind == "" {
		return KindDir
	}
	return p.Kind
}

// Validate checks a pool's fields, naming the bad one.
func (p Pool) Validate() error {
	var errs []error
	if !guestdef.ValidName(p.Name) {
		errs = append(errs, &guestdef.FieldError{Field: "name", Msg: fmt.Sprintf("%q is not a valid pool name: use letters, digits, '.', '_' or '-'", p.Name)})
	}
	switch p.kind() {
	case KindDir:
		if !filepath.IsAbs(p.Path) || filepath.Clean(p.Path) == "/" {
			errs = append(errs, &guestdef.FieldError{Field: "path", Msg: fmt.Sprintf("%q is not an absolute directory path (and not /)", p.Path)})
		}
		if p.VG != "" {
			errs = append(errs, &guestdef.FieldError{Field: "vg", Msg: "a dir pool has no volume group"})
		}
		clean := filepath.Clean(p.Path)
		for _, sys := range []string{"/proc", "/sys", "/dev", "/etc", "/run"} {
			if clean == sys || strings.HasPrefix(clean, sys+"/") {
				if p.Devices && sys == "/dev" && clean != "/dev" {
					break
				}
				errs = append(errs, &guestdef.FieldError{Field: "path", Msg: fmt.Sprintf("%q is a system directory, not a place for guest disks", p.Path)})
				break
			}
		}
		if p.Devices && !strings.HasPrefix(clean, "/dev/") {
			errs = append(errs, &guestdef.FieldError{Field: "devices", Msg: fmt.Sprintf("a device pool lists block devices under /dev (such as /dev/disk/by-id), not %q", p.Path)})
		}
	case KindLVM:
		if !guestdef.ValidName(p.VG) {
			errs = append(errs, &guestdef.FieldError{Field: "vg", Msg: fmt.Sprintf("%q is not a volume group name", p.VG)})
		}
		if p.Path != "" {
			errs = append(errs, &guestdef.FieldError{Field: "path", Msg: "an lvm pool has no path: its volumes are /dev/VG/NAME"})
		}
		if p.Devices {
			errs = append(errs, &guestdef.FieldError{Field: "devices", Msg: "an lvm pool's volumes are block devices already: leave devices unset"})
		}
	default:
		errs = append(errs, &guestdef.FieldError{Field: "kind", Msg: fmt.Sprintf("%q is not dir or lvm", p.Kind)})
	}
	if len(errs) > 0 {
		return fmt.Errorf("pool %q: %w", p.Name, errors.Join(errs...))
	}
	return nil
}

// VolumePath is where volume vol of p is on every host.
func (p Pool) VolumePath(vol string) string {
	if p.kind() == KindLVM {
		return "/dev/" + p.VG + "/" + vol
	}
	return filepath.Join(p.Path, vol)
}

// Health is the outcome of checking a pool on one host.
type Health struct {
	Pool     string `json:"pool"`
	Node     string `json:"node"`
	Present  bool   `json:"present"`
	Writable bool   `json:"writable"`
	Free     int64  `json:"free"`  // bytes
	Total    int64  `json:"total"` // bytes
	Error    string `json:"error,omitempty"`
}

// OK reports whether guests can use the pool on this host.
func (h Health) OK() bool { return h.Present && h.Writable && h.Error == "" }

// Check verifies the pool on this host (named node): present, writable, and
// its free and total space. Failures are in Health.Error, worded for the
// operator. It returns at ctx's deadline even when the mount hangs (a dead
// NFS server): the stuck filesystem call is left behind in a goroutine.
func (p Pool) Check(ctx context.Context, node string) Health {
	h := Health{Pool: p.Name, Node: node}
	if p.kind() == KindLVM {
		return p.checkLVM(ctx, h)
	}
	done := make(chan Health, 1)
	check := dirCheck
	go func(h Health) { done <- check(p, h) }(h)
	select {
	case r := <-done:
		return r
	case <-ctx.Done():
		h.Error = fmt.Sprintf("pool %q: %s did not answer on node %q (%v): is its mount hung?", p.Name, p.Path, node, ctx.Err())
		return h
	}
}

// dirCheck is Pool.checkDir; tests replace it to simulate a hung mount.
var dirCheck = Pool.checkDir

func (p Pool) checkDir(h Health) Health {
	node := h.Node
	st, err := os.Stat(p.Path)
	if err != nil || !st.IsDir() {
		h.Error = fmt.Sprintf("pool %q: %s is missing on node %q: mount it there", p.Name, p.Path, node)
		return h
	}
	h.Present = true
	if p.Devices {
		// Block devices are written by their guests, not through the
		// directory, which udev owns.
		h.Writable = true
		return h
	}
	f, err := os.CreateTemp(p.Path, ".haven-check-"+node+"-*")
	if err != nil {
		h.Error = fmt.Sprintf("pool %q: cannot write in %s on node %q: %v", p.Name, p.Path, node, err)
	} else {
		_, werr := f.Write([]byte("haven\n"))
		serr := f.Sync()
		f.Close()
		os.Remove(f.Name())
		if werr != nil || serr != nil {
			h.Error = fmt.Sprintf("pool %q: writing in %s on node %q failed: %v", p.Name, p.Path, node, errors.Join(werr, serr))
		} else {
			h.Writable = true
		}
	}
	var fs syscall.Statfs_t
	if err := syscall.Statfs(p.Path, &fs); err == nil {
		h.Free = int64(fs.Bavail) * fs.Bsize
		h.Total = int64(fs.Blocks) * fs.Bsize
	}
	return h
}

func (p Pool) checkLVM(ctx context.Context, h Health) Health {
	out, err := run(ctx, "vgs", "--noheadings", "--nosuffix", "--units", "b", "--separator", ";", "-o", "vg_attr,vg_free,vg_size", p.VG)
	if err != nil {
		h.Error = fmt.Sprintf("pool %q: volume group %s not usable on node %q: %v", p.Name, p.VG, h.Node, err)
		return h
	}
	attr, free, size, err := parseVGS(out)
	if err != nil {
		h.Error = fmt.Sprintf("pool %q: volume group %s on node %q: %v", p.Name, p.VG, h.Node, err)
		return h
	}
	h.Present, h.Free, h.Total = true, free, size
	h.Writable = strings.HasPrefix(attr, "w")
	if !h.Writable {
		h.Error = fmt.Sprintf("pool %q: volume group %s is read-only on node %q", p.Name, p.VG, h.Node)
	}
	return h
}

// parseVGS parses one line of `vgs --separator ; -o vg_attr,vg_free,vg_size`.
func parseVGS(out string) (attr string, free, size int64, err error) {
	f := strings.Split(strings.TrimSpace(out), ";")
	if len(f) != 3 {
		return "", 0, 0, fmt.Errorf("unexpected vgs output %q", out)
	}
	free, err1 := strconv.ParseInt(strings.TrimSpace(f[1]), 10, 64)
	size, err2 := strconv.ParseInt(strings.TrimSpace(f[2]), 10, 64)
	if err1 != nil || err2 != nil {
		return "", 0, 0, fmt.Errorf("unexpected vgs output %q", out)
	}
	return strings.TrimSpace(f[0]), free, size, nil
}

func run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s: %w: %s", name, err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// markerDir is where a dir pool keeps the hosts' marker files.
func (p Pool) markerDir() string { return filepath.Join(p.Path, ".haven", "markers") }

// Marker is what one host wrote into a pool.
type Marker struct {
	Node    string    `json:"node"`
	Token   string    `json:"token"`
	Written time.Time `json:"written"`
}

// ErrNoMarkers means the pool kind cannot hold marker files.
var ErrNoMarkers = errors.New("LVM pools hold no marker files: their sharing is the operator's statement (shared: true)")

// NewToken returns a random marker token.
func NewToken() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// WriteMarker writes node's marker with token into the pool (atomically,
// synced). The agent then publishes token through the store; the other hosts
// read the pool's markers and compare (VerifyShared). Like ReadMarkers it
// blocks while the pool's mount hangs: call it after a successful Check.
func (p Pool) WriteMarker(node, token string, now time.Time) error {
	if p.kind() != KindDir || p.Devices {
		return fmt.Errorf("write marker of node %q in pool %q: %w", node, p.Name, ErrNoMarkers)
	}
	if !guestdef.ValidName(node) {
		return fmt.Errorf("write marker in pool %q: %q is not a valid node name", p.Name, node)
	}
	dir := p.markerDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write marker of node %q in pool %q: %w", node, p.Name, err)
	}
	b, _ := json.Marshal(Marker{Node: node, Token: token, Written: now.UTC()})
	f, err := os.CreateTemp(dir, "."+node+".tmp-*")
	if err != nil {
		return fmt.Errorf("write marker of node %q in pool %q: %w", node, p.Name, err)
	}
	_, werr := f.Write(b)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("write marker of node %q in pool %q: %w", node, p.Name, err)
	}
	if err := os.Rename(f.Name(), filepath.Join(dir, node)); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("write marker of node %q in pool %q: %w", node, p.Name, err)
	}
	return nil
}

// ReadMarkers reads every host's marker in the pool, by node.
func (p Pool) ReadMarkers() (map[string]Marker, error) {
	if p.kind() != KindDir || p.Devices {
		return nil, fmt.Errorf("read markers of pool %q: %w", p.Name, ErrNoMarkers)
	}
	entries, err := os.ReadDir(p.markerDir())
	if errors.Is(err, os.ErrNotExist) {
		return map[string]Marker{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read markers of pool %q: %w", p.Name, err)
	}
	out := map[string]Marker{}
	for _, e := range entries {
		if e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(p.markerDir(), e.Name()))
		if err != nil {
			continue
		}
		var m Marker
		if json.Unmarshal(b, &m) != nil || m.Node != e.Name() {
			continue
		}
		out[m.Node] = m
	}
	return out, nil
}

// VerifyShared compares the tokens the hosts published through the store
// (node -> token) with the markers this host reads in the pool. It returns the
// nodes whose marker this host does not see (or sees with another token):
// empty means the pool is really shared with all of them.
func VerifyShared(published map[string]string, seen map[string]Marker) []string {
	var missing []string
	for node, tok := range published {
		if m, ok := seen[node]; !ok || m.Token != tok {
			missing = append(missing, node)
		}
	}
	sort.Strings(missing)
	return missing
}

// CreateVolume creates volume name of size bytes in the pool and returns its
// path: a qcow2 or raw image (qemu-img create) in a dir pool, a logical volume
// (lvcreate) in an LVM pool. An existing volume is never overwritten.
func (p Pool) CreateVolume(ctx context.Context, name string, size int64, format string) (string, error) {
	if !guestdef.ValidName(name) {
		return "", fmt.Errorf("create volume %q in pool %q: not a valid volume name", name, p.Name)
	}
	if size <= 0 {
		return "", fmt.Errorf("create volume %q in pool %q: size %d must be positive", name, p.Name, size)
	}
	path := p.VolumePath(name)
	if p.kind() == KindLVM {
		if format != "" && format != "raw" {
			return "", fmt.Errorf("create volume %q in pool %q: LVM volumes are raw, not %s", name, p.Name, format)
		}
		if _, err := run(ctx, "lvcreate", "--yes", "-n", name, "-L", strconv.FormatInt(size, 10)+"b", p.VG); err != nil {
			return "", fmt.Errorf("create volume %q in pool %q: %w", name, p.Name, err)
		}
		return path, nil
	}
	switch format {
	case "":
		format = "qcow2"
	case "raw", "qcow2":
	default:
		return "", fmt.Errorf("create volume %q in pool %q: format %q is not raw or qcow2", name, p.Name, format)
	}
	if _, err := os.Lstat(path); err == nil {
		return "", fmt.Errorf("create volume %q in pool %q: %s already exists", name, p.Name, path)
	}
	if _, err := run(ctx, "qemu-img", "create", "-q", "-f", format, path, strconv.FormatInt(size, 10)); err != nil {
		return "", fmt.Errorf("create volume %q in pool %q: %w", name, p.Name, err)
	}
	return path, nil
}

func findPool(pools []Pool, name string) (Pool, bool) {
	for _, p := range pools {
		if p.Name == name {
			return p, true
		}
	}
	return Pool{}, false
}

// ResolveDisk returns def with every pool+volume disk given its path on
// this host (Pool and Volume are kept); path disks are left as they are.
func ResolveDisk(def guestdef.Definition, pools []Pool) (guestdef.Definition, error) {
	out := def
	out.Disks = append([]guestdef.Disk(nil), def.Disks...)
	for i, d := range out.Disks {
		if d.Pool == "" {
			continue
		}
		p, ok := findPool(pools, d.Pool)
		if !ok {
			return def, fmt.Errorf("resolve disk %d of guest %q: pool %q is not defined: define it (haven pool add) or fix the guest", i, def.Name, d.Pool)
		}
		if d.Volume == "" {
			return def, fmt.Errorf("resolve disk %d of guest %q: no volume named on pool %q", i, def.Name, d.Pool)
		}
		out.Disks[i].Path = p.VolumePath(d.Volume)
	}
	return out, nil
}

// FailoverCapable reports whether the guest can run on any host: every disk
// is on a shared pool (a pool volume, or a path inside a shared dir pool).
// When it cannot, reason tells the operator which disk and what to do.
func FailoverCapable(def guestdef.Definition, pools []Pool) (ok bool, reason string) {
	for i, d := range def.Disks {
		if d.Pool != "" {
			p, found := findPool(pools, d.Pool)
			switch {
			case !found:
				return false, fmt.Sprintf("disk %d is on pool %q, which is not defined", i, d.Pool)
			case !p.Shared:
				return false, fmt.Sprintf("disk %d is on pool %q, which is not shared between hosts: move it to a shared pool to allow failover", i, d.Pool)
			}
			continue
		}
		if p, found := poolHolding(pools, d.Path); found {
			if !p.Shared {
				return false, fmt.Sprintf("disk %d (%s) is in pool %q, which is not shared between hosts: move it to a shared pool to allow failover", i, d.Path, p.Name)
			}
			continue
		}
		return false, fmt.Sprintf("disk %d (%s) is not on any shared pool: move it to a pool every host mounts, or define one that holds it", i, d.Path)
	}
	return true, ""
}

// poolHolding finds the pool whose directory (or VG) holds path.
func poolHolding(pools []Pool, path string) (Pool, bool) {
	clean := filepath.Clean(path)
	for _, p := range pools {
		var root string
		if p.kind() == KindLVM {
			root = "/dev/" + p.VG
		} else {
			root = filepath.Clean(p.Path)
		}
		if root != "" && strings.HasPrefix(clean, root+"/") {
			return p, true
		}
	}
	return Pool{}, false
}
