package cli

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestPoolCommands(t *testing.T) {
	ag, ctx := startAgent(t)
	dir := t.TempDir()
	tests := []struct {
		role string
		args []string
		code int
		want string // in stdout (code 0) or stderr
	}{
		{"admin", []string{"pool", "add", "shared1", "--path", dir, "--shared"}, 0, `pool "shared1" added`},
		{"admin", []string{"pool", "add", "shared1", "--path", dir}, 1, "exists"},
		{"admin", []string{"pool", "add", "bad", "--path", "relative/dir"}, 2, "absolute"},
		{"admin", []string{"pool", "add"}, 2, "give one pool name"},
		{"viewer", []string{"pool", "add", "p2", "--path", dir}, 1, `needs "admin"`},
		{"viewer", []string{"pool", "list"}, 0, "shared1"},
		{"viewer", []string{"pool", "list", "extra"}, 2, "unexpected arguments"},
		{"admin", []string{"pool", "volume", "create", "shared1", "disk1", "--size", "64MiB"}, 0, "/disk1 (64MiB, qcow2)"},
		{"admin", []string{"pool", "volume", "create", "shared1", "disk1", "--size", "64MiB"}, 1, "exists"},
		{"admin", []string{"pool", "volume", "create", "shared1", "raw1", "--size", "8MiB", "--format", "raw"}, 0, "raw1"},
		{"admin", []string{"pool", "volume", "create", "shared1", "bad name", "--size", "8MiB"}, 1, "not a valid volume name"},
		{"admin", []string{"pool", "volume", "create", "shared1", "x", "--size", "lots"}, 2, "--size"},
		{"admin", []string{"pool", "volume", "create", "nopool", "x", "--size", "8MiB"}, 1, "no storage pool"},
		{"viewer", []string{"pool", "show", "shared1"}, 0, "no host has checked"},
		{"admin", []string{"pool", "delete", "shared1"}, 0, `pool "shared1" deleted`},
		{"admin", []string{"pool", "delete", "shared1"}, 1, "no"},
	}
	if _, err := exec.LookPath("qemu-img"); err != nil && os.Getenv("CI") != "true" {
		t.Skip("qemu-img is not installed (scripts/deps.sh installs it)")
	}
	for _, tc := range tests {
		code, out, errOut := cliRun(ctx, ag, tc.role, "", tc.args...)
		got := out
		if tc.code != 0 {
			got = errOut
		}
		if code != tc.code || !strings.Contains(strings.ToLower(got), strings.ToLower(tc.want)) {
			t.Errorf("haven %s as %s: exit %d, stdout %q, stderr %q; want exit %d with %q",
				strings.Join(tc.args, " "), tc.role, code, out, errOut, tc.code, tc.want)
		}
	}
}
