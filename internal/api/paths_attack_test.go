package api_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/model"
)

// Issue 10, High 1: an operator must not make the hypervisor (root) open any
// file of the host. Every path a guest names must be inside a storage pool an
// admin declared, at create, edit and import.
func TestGuestPathsOutsidePoolsRefused(t *testing.T) {
	ctx := ctxT(t)
	op := ag.Clients["operator"]
	// A pool holding a symlink to /etc/shadow and one to a directory outside.
	dir := t.TempDir()
	if _, err := ag.Clients["admin"].CreatePool(ctx, api.Pool{Name: "attack1", Path: dir}); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/shadow", filepath.Join(dir, "shadow.img")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc", filepath.Join(dir, "etc")); err != nil {
		t.Fatal(err)
	}
	disk := func(p string) map[string]any {
		return map[string]any{"name": "atk", "state": "stopped", "boot": kboot, "disks": []map[string]any{{"path": p, "format": "raw"}}}
	}
	cases := []struct {
		name  string
		body  map[string]any
		field string
	}{
		{"shadow as a disk", disk("/etc/shadow"), "disks[0].path"},
		{"raw host disk", disk("/dev/sda"), "disks[0].path"},
		{"dot-dot out of a pool", disk("/var/lib/images/../../../etc/shadow"), "disks[0].path"},
		{"symlink out of a pool", disk(filepath.Join(dir, "shadow.img")), "disks[0].path"},
		{"symlinked dir out of a pool", disk(filepath.Join(dir, "etc", "shadow")), "disks[0].path"},
		{"pool root itself", disk("/var/lib/images"), "disks[0].path"},
		{"serial log into cron", map[string]any{"name": "atk", "state": "stopped", "boot": kboot, "serial_log": "/etc/cron.d/x"}, "serial_log"},
		{"kernel outside", map[string]any{"name": "atk", "state": "stopped", "boot": map[string]string{"kernel": "/etc/passwd"}}, "boot.kernel"},
		{"initrd outside", map[string]any{"name": "atk", "state": "stopped", "boot": map[string]string{"kernel": "/boot/k", "initrd": "/root/.ssh/id_rsa"}}, "boot.initrd"},
		{"newline in a path", disk("/var/lib/images/a\nb"), "disks[0].path"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := op.CreateGuest(ctx, c.body)
			wantErr(t, err, 400, c.field)
		})
	}

	// Edit: a guest created inside pools cannot be pointed outside.
	if _, err := op.CreateGuest(ctx, map[string]any{"name": "atk2", "state": "stopped", "boot": kboot, "disks": []map[string]any{{"path": "/var/lib/images/atk2.img"}}}); err != nil {
		t.Fatal(err)
	}
	_, err := op.EditGuest(ctx, "atk2", map[string]any{"disks": []map[string]any{{"path": "/etc/shadow"}}})
	wantErr(t, err, 400, "disks[0].path")
	_, err = op.EditGuest(ctx, "atk2", map[string]any{"serial_log": "/etc/cron.d/x"})
	wantErr(t, err, 400, "serial_log")

	// Import: a Xen config or a libvirt XML naming host files.
	xen := "name = \"atk3\"\nmemory = 512\nvcpus = 1\ndisk = [ 'phy:/dev/sda,xvda,w' ]\n"
	_, err = op.ImportGuest(ctx, "xen", []byte(xen), api.GuestPatch{State: new(model.DesiredState("stopped"))})
	wantErr(t, err, 400, "disks[0].path")
	lv := `<domain type='kvm'><name>atk4</name><memory unit='MiB'>256</memory><vcpu>1</vcpu><os><type>hvm</type><kernel>/etc/shadow</kernel></os></domain>`
	_, err = op.ImportGuest(ctx, "libvirt", []byte(lv), api.GuestPatch{State: new(model.DesiredState("stopped"))})
	wantErr(t, err, 400, "boot.kernel")
}

// Issue 10, High 2 and Low: a guest has a sane number of disks and NICs,
// and a huge memory size is refused instead of overflowing.
func TestGuestSizeBounds(t *testing.T) {
	ctx := ctxT(t)
	op := ag.Clients["operator"]
	var disks []map[string]any
	for i := range 15000 {
		disks = append(disks, map[string]any{"path": fmt.Sprintf("/var/lib/images/d%d.img", i)})
	}
	_, err := op.CreateGuest(ctx, map[string]any{"name": "big1", "state": "stopped", "boot": kboot, "disks": disks})
	wantErr(t, err, 400, "disks")
	var nics []map[string]any
	for range 1000 {
		nics = append(nics, map[string]any{"bridge": "br0"})
	}
	_, err = op.CreateGuest(ctx, map[string]any{"name": "big2", "state": "stopped", "boot": kboot, "nics": nics})
	wantErr(t, err, 400, "nics")
	code, e := raw(t, "POST", "/api/v1/guests", "operator", []byte(`{"name":"big3","state":"stopped","boot":{"kernel":"/boot/k"},"memory":9223372036854775807}`))
	if code != 400 || e.Field != "memory" {
		t.Fatalf("memory 2^63-1: got %d field %q (%s), want 400 memory", code, e.Field, e.Message)
	}
	if !strings.Contains(e.Message, "maximum") {
		t.Errorf("memory 2^63-1: %q, want it to name the maximum", e.Message)
	}
}

// Issue 10, High 2: a loop of edits cannot fill the store's quota with
// versions of one guest: edits of one guest are rate-limited.
func TestGuestEditFloodLimited(t *testing.T) {
	ctx := ctxT(t)
	op := ag.Clients["operator"]
	if _, err := op.CreateGuest(ctx, map[string]any{"name": "flood1", "state": "stopped", "boot": kboot}); err != nil {
		t.Fatal(err)
	}
	limited := 0
	for i := range 60 {
		_, err := op.EditGuest(ctx, "flood1", map[string]any{"boot": map[string]string{"kernel": "/boot/k", "cmdline": strings.Repeat("x", 4000) + fmt.Sprint(i)}})
		var e *api.Error
		if asAPIError(err, &e) && e.Status == 429 {
			limited++
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if limited < 45 {
		t.Errorf("60 quick edits of one guest: %d refused with 429, want at least 45 (a burst of 10 passes)", limited)
	}
}
