package client

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/haven-ha/haven/internal/api"
)

// Issue 10, Medium 4: any local user can write to /tmp; a local.json planted
// there (pointing at the planter's server and CA) must not be believed, nor
// one that others can write, and a server named in HAVEN_SERVER is never
// paired with a discovered CA.
func TestDiscoveryTrustsOnlyOwnFiles(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.crt")
	os.WriteFile(ca, []byte("x"), 0o644)
	b, _ := json.Marshal(api.Local{APIURL: "https://attacker:9999", CAFile: ca})
	local := filepath.Join(dir, LocalFile)
	if err := os.WriteFile(local, b, 0o644); err != nil {
		t.Fatal(err)
	}
	env := func(k string) string {
		if k == "HAVEN_DATA_DIR" {
			return dir
		}
		return ""
	}
	if _, _, err := FindLocal(env); err != nil {
		t.Fatalf("own local.json: %v", err)
	}
	os.Chmod(local, 0o666)
	if _, _, err := FindLocal(env); err == nil || !strings.Contains(err.Error(), "writable by others") {
		t.Errorf("world-writable local.json: %v, want it refused", err)
	}
	os.Chmod(local, 0o644)
	if os.Geteuid() == 0 {
		// Planted by another user (uid 65534, nobody).
		if err := os.Chown(local, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if _, _, err := FindLocal(env); err == nil || !strings.Contains(err.Error(), "owned by uid 65534") {
			t.Errorf("local.json of another user: %v, want it refused", err)
		}
		os.Chown(local, 0, 0)
		os.Chown(ca, 65534, 65534)
		if _, _, err := FindLocal(env); err == nil {
			t.Error("a CA file of another user named by local.json was believed")
		}
		os.Chown(ca, 0, 0)
	}
	// HAVEN_SERVER without HAVEN_CACERT does not take the local CA.
	_, err := FromOptions(Options{}, func(k string) string {
		switch k {
		case "HAVEN_SERVER":
			return "https://real:8443"
		case "HAVEN_TOKEN":
			return "hvt.a.b"
		}
		return env(k)
	})
	if err == nil || !strings.Contains(err.Error(), "--ca") {
		t.Errorf("HAVEN_SERVER with a discovered CA: %v, want an error asking for --ca", err)
	}
	_, err = FromOptions(Options{Token: "hvt.a.b"}, env)
	if err == nil || !strings.Contains(err.Error(), "--server") {
		t.Errorf("HAVEN_TOKEN sent to a discovered server: %v, want an error asking for --server", err)
	}
}
