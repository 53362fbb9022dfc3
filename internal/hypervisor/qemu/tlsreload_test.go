package qemu

import (
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"testing"
)

// The credentials a running QEMU loads before a migration are readable by
// QEMU's user only, and stay root's: another process of that user (another
// guest's QEMU) cannot replace them, and no other user reads them.
func TestGrantRead(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv not installed")
	}
	u, err := user.Lookup(DefaultUser)
	if err != nil {
		t.Fatalf("user %s missing (scripts/deps.sh creates it): %v", DefaultUser, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	dir, err := os.MkdirTemp("", "haven-tls-test-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	creds := filepath.Join(dir, "creds")
	if err := os.Mkdir(creds, 0o700); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(creds, "client-key.pem")
	if err := os.WriteFile(key, []byte("KEY"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := grantRead(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	as := func(uid string, script string) error {
		return exec.Command("setpriv", "--reuid", uid, "--regid", uid, "--clear-groups", "sh", "-c", script).Run()
	}
	if err := as(u.Uid, "cat "+key+" >/dev/null"); err != nil {
		t.Errorf("%s cannot read the key: %v", DefaultUser, err)
	}
	for what, script := range map[string]string{
		"overwrite the key":  "echo X > " + key,
		"replace the key":    "echo X > " + creds + "/x && mv " + creds + "/x " + key,
		"change its mode":    "chmod 666 " + key,
		"add a file":         "touch " + creds + "/y",
		"list the directory": "ls " + creds,
	} {
		if err := as(u.Uid, script); err == nil {
			t.Errorf("%s could %s", DefaultUser, what)
		}
	}
	if err := as("65534", "cat "+key+" >/dev/null"); err == nil {
		t.Error("nobody could read the key")
	}
	if b, _ := os.ReadFile(key); string(b) != "KEY" {
		t.Errorf("key now %q", b)
	}
}
