package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/api"
)

// TestJoinErrors checks that bad joins fail with a clear message and leave
// nothing behind: no data dir, no registration, no store member.
func TestJoinErrors(t *testing.T) {
	c := newCluster(t, 50, "--lease-ttl", "3s", "--keepalive", "500ms")
	first := c.initNode("j1")
	c.joinNode("j2")
	c.waitStatus(first, "two hosts online", 20*time.Second, allOnline("j1", "j2"))

	expired, err := c.haven(first, "token", "create", "--role", "join", "--ttl", "1ns")
	if err != nil {
		t.Fatal(err)
	}
	viewer, err := c.haven(first, "token", "create", "--role", "viewer")
	if err != nil {
		t.Fatal(err)
	}
	// Another cluster, for its join token and its data dir.
	other := newCluster(t, 60, "--lease-ttl", "3s", "--keepalive", "500ms")
	otherNode := other.initNode("o1")
	other.stopAll()

	goodPin := c.join[strings.LastIndex(c.join, "."):]
	wrongSecret := strings.Join([]string{"hvj", strings.Split(c.join, ".")[1], "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}, ".") + goodPin
	tests := []struct {
		name    string
		node    string
		join    string
		token   string
		dataDir string // default: a fresh dir
		want    string
	}{
		{name: "wrong secret", node: "jx", token: wrongSecret, want: "unknown or revoked token"},
		{name: "unknown id", node: "jx", token: "hvj.aaaaaaaaaaaaa.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" + goodPin, want: "unknown or revoked token"},
		{name: "expired", node: "jx", token: strings.TrimSpace(expired), want: "expired"},
		{name: "api token", node: "jx", token: strings.TrimSpace(viewer), want: "not a join token"},
		{name: "garbage", node: "jx", token: "letmein", want: "not a join token"},
		{name: "name in use", node: "j2", want: `node name "j2" is in use`},
		{name: "bad name", node: "J_2!", want: "not valid"},
		{name: "unreachable", node: "jx", join: "https://127.0.0.1:1", want: "connection refused"},
		{name: "other cluster's CA", node: "jx", token: other.join, want: "does not match the join token"},
		{name: "data dir of another cluster", node: "o1", dataDir: otherNode.dir, want: "belongs to another cluster"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := c.addNode(tt.node)
			n.name = tt.node
			n.dir = fmt.Sprintf("%s/case%d", c.base, i)
			if tt.dataDir != "" {
				n.dir = tt.dataDir
			}
			join, token := c.api, c.join
			if tt.join != "" {
				join = tt.join
			}
			if tt.token != "" {
				token = tt.token
			}
			n.args = []string{"--join", join, "--token", token}
			err := c.start(n)
			if err == nil {
				t.Fatalf("case %d: join succeeded", i)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error does not say %q:\n%v", tt.want, err)
			}
			if tt.dataDir == "" {
				if _, err := os.Stat(n.dir); !os.IsNotExist(err) {
					t.Errorf("failed join left %s behind (%v)", n.dir, err)
				}
			} else if _, err := os.Stat(tt.dataDir + "/node.json"); err != nil {
				t.Errorf("failed join damaged the other data dir: %v", err)
			}
		})
	}
	// Nothing registered, store membership unchanged.
	st, err := c.status(first)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Hosts) != 2 || len(st.Store.Members) != 2 {
		b, _ := json.MarshalIndent(st, "", "  ")
		t.Fatalf("failed joins left state in the store:\n%s", b)
	}
	// A good join still works after all that.
	c.joinNode("j3")
	c.waitStatus(first, "three hosts", 20*time.Second, allOnline("j1", "j2", "j3"))
}

// TestSecondAgentOnDataDirRefused checks the data dir lock.
func TestSecondAgentOnDataDirRefused(t *testing.T) {
	c := newCluster(t, 70)
	n := c.initNode("l1")
	dup := c.addNode("l1")
	dup.dir = n.dir
	err := c.start(dup)
	if err == nil || !strings.Contains(err.Error(), "in use by another haven agent") {
		t.Fatalf("second agent on %s: %v", n.dir, err)
	}
	// The first is unharmed.
	c.waitStatus(n, "l1 online", 10*time.Second, allOnline("l1"))
}

// TestAPIErrors checks status codes and JSON errors of the API through the CLI.
func TestAPIErrors(t *testing.T) {
	c := newCluster(t, 80)
	n := c.initNode("a1")
	viewer, err := c.haven(n, "token", "create", "--role", "viewer")
	if err != nil {
		t.Fatal(err)
	}
	admin := c.admin
	defer func() { c.admin = admin }()
	c.admin = strings.TrimSpace(viewer)
	if _, err := c.status(n); err != nil {
		t.Fatalf("viewer cannot read status: %v", err)
	}
	if _, err := c.haven(n, "token", "create", "--role", "admin"); err == nil || !strings.Contains(err.Error(), `this needs "admin"`) {
		t.Fatalf("viewer created a token: %v", err)
	}
	c.admin = "hvt.aaaaaaaaaaaaa.aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	if _, err := c.status(n); err == nil || !strings.Contains(err.Error(), "unknown or revoked token") {
		t.Fatalf("bad token: %v", err)
	}
	c.admin = admin
	if _, err := c.haven(n, "token", "create", "--role", "root"); err == nil || !strings.Contains(err.Error(), "unknown role") {
		t.Fatalf("bad role: %v", err)
	}
	if _, err := c.haven(n, "node", "remove", "a1"); err == nil || !strings.Contains(err.Error(), "is online") {
		t.Fatalf("removing an online node: %v", err)
	}
	var _ api.Status
}

// TestDevAndLocalCLI: `haven agent --dev` makes a one-host cluster, and the
// CLI on the host finds it with no flags (here through HAVEN_DATA_DIR, as
// the default dirs may be used by others on this machine).
func TestDevAndLocalCLI(t *testing.T) {
	c := newCluster(t, 130)
	n := c.addNode("dev")
	n.args = []string{"--dev"}
	if err := c.start(n); err != nil {
		t.Fatal(err)
	}
	c.waitFor("dev output", 10*time.Second, func() bool { return strings.Contains(n.out.String(), "hvt.") })
	tok, err := os.ReadFile(n.dir + "/admin.token")
	if err != nil || !strings.Contains(n.out.String(), strings.TrimSpace(string(tok))) {
		t.Fatalf("admin token file %q (%v) not the printed one:\n%s", tok, err, n.out.String())
	}
	cmd := exec.Command(havenBin, "status", "-o", "json")
	cmd.Env = []string{"HAVEN_DATA_DIR=" + n.dir, "PATH=" + os.Getenv("PATH")}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("local status: %v\n%s", err, out)
	}
	var st api.Status
	if err := json.Unmarshal(out, &st); err != nil || st.Manager != "dev" || hostState(&st, "dev") != api.HostOnline || st.Quorum.Voters != 1 {
		t.Fatalf("dev status %s (%v)", out, err)
	}
	// Restarting the node under another name is refused.
	c.stopAll()
	n.args = []string{"--node", "other"}
	if err := c.start(n); err == nil || !strings.Contains(err.Error(), `belongs to node "dev"`) {
		t.Fatalf("restart under another name: %v", err)
	}
}
