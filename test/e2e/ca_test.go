package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/pki"
	"github.com/haven-ha/haven/internal/store"
)

func (c *testCluster) caRotation(via *agentProc) (*api.CARotation, error) {
	out, err := c.haven(via, "ca", "status", "-o", "json")
	if err != nil {
		return nil, err
	}
	var r api.CARotation
	return &r, json.Unmarshal([]byte(out), &r)
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A running three-host cluster rotates its CA: a host killed in the first
// phase holds the rotation up (no store member restarts while another is
// down) until it is back, then every host trusts and presents the new CA
// only, the store and the API work, and the old CA opens nothing: neither
// the store nor the API take a certificate it signed, and a client that
// trusts only it is refused by the hosts.
func TestCARotation(t *testing.T) {
	c := newCluster(t, 150)
	n1 := c.initNode("n1")
	n2 := c.joinNode("n2")
	n3 := c.joinNode("n3")
	c.waitStatus(n1, "three hosts online", 30*time.Second, allOnline("n1", "n2", "n3"))
	oldCA := readFile(t, filepath.Join(n1.dir, "pki", "ca.crt"))
	oldCert := readFile(t, filepath.Join(n3.dir, "pki", "node.crt"))
	oldKey := readFile(t, filepath.Join(n3.dir, "pki", "node.key"))
	if _, err := c.haven(n1, "ca", "status"); err == nil || !strings.Contains(err.Error(), "never rotated") {
		t.Fatalf("ca status before any rotation: %v", err)
	}

	c.kill9(n3)
	out, err := c.haven(n2, "ca", "rotate", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var rot api.CARotation
	if err := json.Unmarshal([]byte(out), &rot); err != nil || rot.Phase != store.RotationTrust || rot.NewCA == rot.OldCA {
		t.Fatalf("ca rotate: %v %+v", err, rot)
	}
	if _, err := c.haven(n1, "ca", "rotate"); err == nil || !strings.Contains(err.Error(), "under way") {
		t.Fatalf("a second rotation while one is under way: %v", err)
	}
	// n1 and n2 trust both CAs, but neither restarts its store member
	// while n3's is down: the rotation waits for n3.
	c.waitFor("n1 and n2 trust both CAs", 30*time.Second, func() bool {
		for _, n := range []*agentProc{n1, n2} {
			cas, err := pki.ParseCerts(readFile(t, filepath.Join(n.dir, "pki", "ca.crt")))
			if err != nil || len(cas) != 2 {
				return false
			}
		}
		return true
	})
	r, err := c.caRotation(n1)
	if err != nil || r.Phase != store.RotationTrust || !slices.Contains(r.Waiting, "n3") {
		t.Fatalf("rotation with n3 down: %v %+v", err, r)
	}
	c.restart(n3)
	back := time.Now()
	out, err = c.haven(n1, "ca", "status", "--wait", "--timeout", "4m", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	rot = api.CARotation{}
	if err := json.Unmarshal([]byte(out), &rot); err != nil || rot.Phase != store.RotationDone || len(rot.Waiting) != 0 {
		t.Fatalf("rotation: %v %+v", err, rot)
	}
	t.Logf("rotation done %v after n3 came back", time.Since(back).Round(100*time.Millisecond))
	for _, n := range c.nodes {
		for _, line := range strings.Split(n.errb.String(), "\n") {
			if strings.Contains(line, "store member restarted") {
				if _, took, ok := strings.Cut(line, "took="); ok {
					t.Logf("%s: store member restart took %s", n.name, strings.Fields(took)[0])
				}
			}
		}
	}
	st := c.waitStatus(n3, "three hosts online after the rotation", 30*time.Second, allOnline("n1", "n2", "n3"))
	if !st.Quorum.OK || st.Quorum.Voters != 3 {
		t.Errorf("quorum after the rotation: %+v", st.Quorum)
	}

	newCA := readFile(t, filepath.Join(n1.dir, "pki", "ca.crt"))
	cas, err := pki.ParseCerts(newCA)
	if err != nil || len(cas) != 1 || pki.Fingerprint(cas[0]) != rot.NewCA {
		t.Fatalf("n1 trusts %d CAs after the rotation (%v), want the new one only", len(cas), err)
	}
	for _, n := range c.nodes {
		if got := readFile(t, filepath.Join(n.dir, "pki", "ca.crt")); string(got) != string(newCA) {
			t.Errorf("%s trusts another bundle than n1", n.name)
		}
		cert, err := pki.ParseCert(readFile(t, filepath.Join(n.dir, "pki", "node.crt")))
		if err != nil || cert.CheckSignatureFrom(cas[0]) != nil {
			t.Errorf("%s's certificate is not the new CA's: %v", n.name, err)
		}
	}
	// The store and the API work through every host: a write through one,
	// read through another.
	if _, err := c.haven(n3, "token", "create", "--role", "viewer", "--name", "after-rotation"); err != nil {
		t.Fatal(err)
	}
	if out, err := c.haven(n2, "token", "list"); err != nil || !strings.Contains(out, "after-rotation") {
		t.Fatalf("token list through n2: %v\n%s", err, out)
	}
	// A join token made before the rotation pins the old CA: a host given
	// it refuses the cluster. A new one pins the new CA.
	x := c.addNode("x4")
	x.args = []string{"--join", "https://" + n1.listen, "--token", c.join}
	if err := c.start(x); err == nil || !strings.Contains(err.Error(), "does not match the join token") {
		t.Fatalf("join with a token of the old CA: %v", err)
	}
	out, err = c.haven(n1, "token", "create", "--role", "join", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var tok api.TokenResponse
	if err := json.Unmarshal([]byte(out), &tok); err != nil {
		t.Fatal(err)
	}
	c.join = tok.Token
	n4 := c.joinNode("n4")
	c.waitStatus(n1, "n4 online", 30*time.Second, allOnline("n1", "n2", "n3", "n4"))
	if got := readFile(t, filepath.Join(n4.dir, "pki", "ca.crt")); string(got) != string(newCA) {
		t.Errorf("n4 joined trusting %q", got)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The old CA's certificate (n3's before) opens no store member.
	oldTLS, err := pki.ClientTLS(newCA, oldCert, oldKey)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"https://" + n1.client}, TLS: oldTLS, DialTimeout: 3 * time.Second})
	if err == nil {
		gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err = cli.Get(gctx, store.KeyClusterConfig)
		cancel()
		cli.Close()
	}
	if err == nil {
		t.Error("the store answered a certificate of the old CA")
	}
	// Nor the API, and a client trusting only the old CA refuses the hosts.
	for _, n := range c.nodes {
		tr := &http.Transport{TLSClientConfig: oldTLS}
		if _, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("https://" + n.listen + "/api/v1/status"); err == nil {
			t.Errorf("%s's API took a certificate of the old CA", n.name)
		}
		tr.CloseIdleConnections()
		oldOnly, err := pki.ClientTLS(oldCA, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := tls.Dial("tcp", n.listen, oldOnly)
		if err == nil {
			conn.Close()
			t.Errorf("%s's API presents a certificate of the old CA", n.name)
		}
	}
	// The event log tells the rotation's course.
	out, err = c.haven(n1, "events", "-o", "json")
	if err != nil || !strings.Contains(out, "CA rotation "+rot.ID+" done") || !strings.Contains(out, "CA rotation "+rot.ID+" started") {
		t.Errorf("events do not tell the rotation: %v\n%s", err, out)
	}
}
