package storage

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/guestdef"
)

func TestPoolValidate(t *testing.T) {
	tests := []struct {
		name  string
		pool  Pool
		field string
	}{
		{"dir", Pool{Name: "nfs", Path: "/srv/nfs", Shared: true}, ""},
		{"lvm", Pool{Name: "san", Kind: KindLVM, VG: "vg_san", Shared: true}, ""},
		{"bad name", Pool{Name: "a b", Path: "/x"}, "name"},
		{"relative path", Pool{Name: "p", Path: "srv"}, "path"},
		{"root path", Pool{Name: "p", Path: "/"}, "path"},
		{"dir with vg", Pool{Name: "p", Path: "/x", VG: "v"}, "vg"},
		{"lvm without vg", Pool{Name: "p", Kind: KindLVM}, "vg"},
		{"lvm with path", Pool{Name: "p", Kind: KindLVM, VG: "v", Path: "/x"}, "path"},
		{"bad kind", Pool{Name: "p", Kind: "zfs", Path: "/x"}, "kind"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.pool.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var fe *guestdef.FieldError
			if !errors.As(err, &fe) || fe.Field != tt.field {
				t.Errorf("Validate = %v, want a FieldError on %q", err, tt.field)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	h := Pool{Name: "p", Path: dir}.Check(ctx, "n1")
	if !h.OK() || h.Free <= 0 || h.Total < h.Free {
		t.Errorf("check of a writable dir = %+v", h)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("check left files: %v", entries)
	}
	h = Pool{Name: "p", Path: filepath.Join(dir, "missing")}.Check(ctx, "n1")
	if h.OK() || h.Present || !strings.Contains(h.Error, "mount it") {
		t.Errorf("check of a missing dir = %+v", h)
	}
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	if h := (Pool{Name: "p", Path: file}).Check(ctx, "n1"); h.Present {
		t.Errorf("a file passed as a pool dir: %+v", h)
	}
}

func TestMarkersShowSharing(t *testing.T) {
	shared := t.TempDir()
	now := time.Unix(1700000000, 0)
	// Hosts n1 and n2 mount the same directory; n3 has a local directory at
	// the "same" path (here: another directory), so it is not shared.
	n1, n2 := Pool{Name: "nfs", Path: shared}, Pool{Name: "nfs", Path: shared}
	n3 := Pool{Name: "nfs", Path: t.TempDir()}
	published := map[string]string{"n1": NewToken(), "n2": NewToken(), "n3": NewToken()}
	for node, p := range map[string]Pool{"n1": n1, "n2": n2, "n3": n3} {
		if err := p.WriteMarker(node, published[node], now); err != nil {
			t.Fatal(err)
		}
	}
	seen, err := n1.ReadMarkers()
	if err != nil {
		t.Fatal(err)
	}
	if got := VerifyShared(published, seen); !reflect.DeepEqual(got, []string{"n3"}) {
		t.Errorf("from n1, missing = %v, want [n3]", got)
	}
	seen3, _ := n3.ReadMarkers()
	if got := VerifyShared(published, seen3); !reflect.DeepEqual(got, []string{"n1", "n2"}) {
		t.Errorf("from n3, missing = %v, want [n1 n2]", got)
	}
	// A stale marker (old token) does not count.
	published["n2"] = NewToken()
	if got := VerifyShared(published, seen); !reflect.DeepEqual(got, []string{"n2", "n3"}) {
		t.Errorf("with a stale token, missing = %v", got)
	}
	if m := seen["n1"]; !m.Written.Equal(now) {
		t.Errorf("marker time = %v", m.Written)
	}
	if err := (Pool{Name: "san", Kind: KindLVM, VG: "v"}).WriteMarker("n1", "t", now); !errors.Is(err, ErrNoMarkers) {
		t.Errorf("LVM marker: err = %v", err)
	}
	if err := n1.WriteMarker("../evil", "t", now); err == nil {
		t.Error("marker with a path in the node name accepted")
	}
}

func TestCreateVolume(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("qemu-img missing (qemu-utils)")
		}
		t.Skip("qemu-img missing (qemu-utils)")
	}
	ctx := context.Background()
	p := Pool{Name: "p", Path: t.TempDir()}
	path, err := p.CreateVolume(ctx, "g1.qcow2", 64<<20, "")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("qemu-img", "info", path).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "file format: qcow2") || !strings.Contains(string(out), "64 MiB") {
		t.Errorf("qemu-img info: %s %v", out, err)
	}
	if _, err := p.CreateVolume(ctx, "g1.qcow2", 64<<20, "qcow2"); err == nil {
		t.Error("existing volume overwritten")
	}
	raw, err := p.CreateVolume(ctx, "g2.img", 1<<20, "raw")
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(raw); err != nil || st.Size() != 1<<20 {
		t.Errorf("raw volume: %v %v", st, err)
	}
	for _, bad := range []struct {
		name, format string
		size         int64
	}{{"../x", "raw", 1}, {"x", "vmdk", 1}, {"y", "raw", 0}} {
		if _, err := p.CreateVolume(ctx, bad.name, bad.size, bad.format); err == nil {
			t.Errorf("CreateVolume(%q, %d, %q) accepted", bad.name, bad.size, bad.format)
		}
	}
}

var pools = []Pool{
	{Name: "nfs", Path: "/srv/nfs", Shared: true},
	{Name: "local", Path: "/var/lib/haven/local"},
	{Name: "san", Kind: KindLVM, VG: "vgsan", Shared: true},
}

func TestResolveDisk(t *testing.T) {
	def := guestdef.Definition{Name: "g", Disks: []guestdef.Disk{
		{Pool: "nfs", Volume: "g.qcow2", Format: "qcow2"},
		{Pool: "san", Volume: "g-data"},
		{Path: "/dev/sdz"},
	}}
	got, err := ResolveDisk(def, pools)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/srv/nfs/g.qcow2", "/dev/vgsan/g-data", "/dev/sdz"}
	for i, w := range want {
		if got.Disks[i].Path != w {
			t.Errorf("disk %d path = %q, want %q", i, got.Disks[i].Path, w)
		}
	}
	if def.Disks[0].Path != "" {
		t.Error("ResolveDisk modified its input")
	}
	def.Disks[0].Pool = "nope"
	if _, err := ResolveDisk(def, pools); err == nil || !strings.Contains(err.Error(), `pool "nope"`) {
		t.Errorf("unknown pool: err = %v", err)
	}
}

func TestFailoverCapable(t *testing.T) {
	tests := []struct {
		name   string
		disks  []guestdef.Disk
		ok     bool
		reason string
	}{
		{"no disks", nil, true, ""},
		{"shared pool volumes", []guestdef.Disk{{Pool: "nfs", Volume: "a"}, {Pool: "san", Volume: "b"}}, true, ""},
		{"path in shared pool", []guestdef.Disk{{Path: "/srv/nfs/a.qcow2"}}, true, ""},
		{"lvm path", []guestdef.Disk{{Path: "/dev/vgsan/b"}}, true, ""},
		{"local pool volume", []guestdef.Disk{{Pool: "nfs", Volume: "a"}, {Pool: "local", Volume: "b"}}, false, `disk 1 is on pool "local", which is not shared`},
		{"path in local pool", []guestdef.Disk{{Path: "/var/lib/haven/local/b"}}, false, `pool "local", which is not shared`},
		{"path nowhere", []guestdef.Disk{{Path: "/var/lib/libvirt/images/x.img"}}, false, "is not on any shared pool"},
		{"prefix is not containment", []guestdef.Disk{{Path: "/srv/nfs2/x.img"}}, false, "is not on any shared pool"},
		{"undefined pool", []guestdef.Disk{{Pool: "gone", Volume: "x"}}, false, "not defined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, reason := FailoverCapable(guestdef.Definition{Name: "g", Disks: tt.disks}, pools)
			if ok != tt.ok || !strings.Contains(reason, tt.reason) || (ok && reason != "") {
				t.Errorf("FailoverCapable = %v, %q; want %v, %q", ok, reason, tt.ok, tt.reason)
			}
		})
	}
}

func TestParseVGS(t *testing.T) {
	attr, free, size, err := parseVGS("  wz--n-;1073741824;10737418240\n")
	if err != nil || attr != "wz--n-" || free != 1<<30 || size != 10<<30 {
		t.Errorf("parseVGS = %q %d %d %v", attr, free, size, err)
	}
	if _, _, _, err := parseVGS("garbage"); err == nil {
		t.Error("garbage accepted")
	}
}

func TestCheckHonoursDeadline(t *testing.T) {
	// A hung mount: the filesystem never answers (until the test ends).
	release := make(chan struct{})
	defer close(release)
	real := dirCheck
	dirCheck = func(p Pool, h Health) Health { <-release; return h }
	defer func() { dirCheck = real }()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	h := Pool{Name: "p", Path: t.TempDir()}.Check(ctx, "n1")
	if h.OK() || !strings.Contains(h.Error, "did not answer") || !strings.Contains(h.Error, "hung") {
		t.Errorf("check of a hung mount = %+v", h)
	}
}
