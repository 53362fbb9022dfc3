package api_test

import (
	"github.com/haven-ha/haven/internal/api"
	"path/filepath"
	"strings"
	"testing"
)

// A guest whose disk is a file no shared pool holds cannot move to another
// host: migrate and relocate are refused with the reason, before the manager
// is asked.
func TestLocalDiskGuestCannotMove(t *testing.T) {
	ctx := ctxT(t)
	op := ag.Clients["operator"]
	dir := t.TempDir()
	if _, err := ag.Clients["admin"].CreatePool(ctx, api.Pool{Name: "local1", Path: dir}); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(dir, "local.img")
	if _, err := op.CreateGuest(ctx, map[string]any{"boot": kboot, "name": "local1", "state": "stopped",
		"disks": []map[string]any{{"path": disk, "format": "raw"}}}); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"migrate", "relocate"} {
		_, err := op.GuestCommand(ctx, "local1", cmd, "n1")
		wantErr(t, err, 409, "name")
		if !strings.Contains(err.Error(), "cannot run on another host") {
			t.Errorf("%s of a local-disk guest: %v, want the reason", cmd, err)
		}
	}
}
