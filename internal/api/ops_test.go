package api_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/api/apitest"
	"github.com/haven-ha/haven/internal/api/client"
	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/fence"
	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/manager"
	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/pki"
	"github.com/haven-ha/haven/internal/savedstate"
	"github.com/haven-ha/haven/internal/storage"
)

// The tests share one real agent (embedded etcd, TLS API) started by
// TestMain, and use distinct guest, domain and node names.
var (
	ag *apitest.Agent
	// handlers lets a test decide the outcome of its guests' commands (by
	// guest name; "" for maintenance commands). The manager loop is not
	// part of the agent these tests run: apitest.PlayManager stands in for
	// it and marks each queued command done, by default after checking it
	// with manager.Validate against the saved manager state.
	handlersMu sync.Mutex
	handlers   = map[string]apitest.CommandHandler{}
)

func TestMain(m *testing.M) {
	var err error
	ag, err = apitest.Start("n1", "")
	if err != nil {
		fmt.Fprintln(os.Stderr, "start agent:", err)
		os.Exit(1)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := testPools(ctx, ag); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	wait := ag.PlayManager(ctx, func(c cluster.Command) error {
		handlersMu.Lock()
		h := handlers[c.Command.Guest]
		handlersMu.Unlock()
		if h != nil {
			return h(c)
		}
		return validateSaved(ctx, manager.Command(c.Command))
	})
	code := m.Run()
	cancel()
	if err := wait(); err != nil {
		fmt.Fprintln(os.Stderr, "playing the manager:", err)
		code = 1
	}
	ag.Stop()
	os.Exit(code)
}

// testPools declares the storage pools the tests' guests use: every file a
// guest names must be in one (kernels in /boot, disks in /var/lib/images and
// /guest_roots).
func testPools(ctx context.Context, a *apitest.Agent) error {
	for _, p := range []storage.Pool{{Name: "boot", Path: "/boot"}, {Name: "images", Path: "/var/lib/images", Shared: true}, {Name: "roots", Path: "/guest_roots"}, {Name: "libvirt", Path: "/var/lib/libvirt/images"}} {
		if _, err := a.Clients["admin"].CreatePool(ctx, p); err != nil {
			return fmt.Errorf("create pool %s: %w", p.Name, err)
		}
	}
	return nil
}

func setHandler(t *testing.T, guest string, h apitest.CommandHandler) {
	handlersMu.Lock()
	handlers[guest] = h
	handlersMu.Unlock()
	t.Cleanup(func() {
		handlersMu.Lock()
		delete(handlers, guest)
		handlersMu.Unlock()
	})
}

// validateSaved is what the manager does first with a command: Validate
// against its state.
func validateSaved(ctx context.Context, c manager.Command) error {
	st, err := savedstate.Load(ctx, ag.Cluster.Raw().Client())
	if err != nil {
		return nil
	}
	return st.Validate(c)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// wantErr checks that err is an API error with the status and field.
func wantErr(t *testing.T, err error, status int, field string) {
	t.Helper()
	var e *api.Error
	if !errors.As(err, &e) {
		t.Fatalf("got %v, want an API error %d (field %q)", err, status, field)
	}
	if e.Status != status || e.Field != field {
		t.Fatalf("got %d field %q (%s), want %d field %q", e.Status, e.Field, e.Message, status, field)
	}
}

// raw sends body as is with the token of role and returns the status and
// the decoded error (if any).
func raw(t *testing.T, method, path, role string, body []byte) (int, api.Error) {
	t.Helper()
	ca, err := os.ReadFile(ag.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := pki.ClientTLS(ca, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}, Timeout: 30 * time.Second}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequest(method, ag.URL()+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+ag.Tokens[role])
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var e api.Error
	_ = json.Unmarshal(data, &e)
	return resp.StatusCode, e
}

func registerNode(t *testing.T, name string) {
	t.Helper()
	if err := ag.RegisterNode(ctxT(t), name); err != nil && !strings.Contains(err.Error(), "exists") {
		t.Fatalf("register node %s: %v", name, err)
	}
}

func TestGuestCreateGetListEdit(t *testing.T) {
	ctx := ctxT(t)
	op, viewer := ag.Clients["operator"], ag.Clients["viewer"]
	g, err := op.CreateGuest(ctx, map[string]any{
		"name": "web1", "memory": "512MiB", "vcpus": 2, "state": "stopped", "restart_window": "5m",
		"disks": []map[string]any{{"path": "/var/lib/images/web1.qcow2", "format": "qcow2"}},
		"nics":  []map[string]any{{"bridge": "br0", "mac": "52:54:00:12:34:56"}},
	})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if g.Spec.Memory != 512*model.MiB || g.Spec.CPUs != 2 || g.Definition.VCPUs != 2 || g.Definition.Memory != 512*model.MiB ||
		g.Spec.RestartWindow != 5*time.Minute || !g.Spec.Migratable || g.Spec.Recovery != model.RecoveryRestart || g.Runtime.State != api.StatePending {
		t.Fatalf("created guest = %+v", g)
	}
	if len(g.History) == 0 || !strings.Contains(g.History[0].Msg, "created guest web1") || !strings.Contains(g.History[0].Who, "test operator") {
		t.Fatalf("history = %+v, want the creation with who did it", g.History)
	}
	got, err := viewer.Guest(ctx, "web1")
	if err != nil || got.Rev != g.Rev || got.Definition.Disks[0].Path != "/var/lib/images/web1.qcow2" {
		t.Fatalf("get: %+v %v", got, err)
	}
	rows, err := viewer.Guests(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range rows {
		if r.Name == "web1" {
			found = r.State == api.StatePending && r.Desired == model.DesiredStopped && r.Memory == 512*model.MiB
		}
	}
	if !found {
		t.Fatalf("list = %+v, want web1 pending", rows)
	}
	// Edit with the rev read: absent fields keep their values.
	ed, err := op.EditGuest(ctx, "web1", map[string]any{"vcpus": 4, "rev": got.Rev})
	if err != nil {
		t.Fatalf("edit: %v", err)
	}
	if ed.Spec.CPUs != 4 || ed.Spec.Memory != 512*model.MiB || len(ed.Definition.NICs) != 1 || ed.Created != got.Created {
		t.Fatalf("edited = %+v", ed)
	}
	// The same (now stale) rev conflicts, and nothing changes.
	_, err = op.EditGuest(ctx, "web1", map[string]any{"vcpus": 8, "rev": got.Rev})
	wantErr(t, err, 409, "rev")
	if now, _ := viewer.Guest(ctx, "web1"); now.Spec.CPUs != 4 {
		t.Fatalf("a rejected edit changed the guest: %+v", now.Spec)
	}
}

// manyTags is n distinct valid tags as JSON list items.
func manyTags(n int) string {
	var ts []string
	for i := range n {
		ts = append(ts, fmt.Sprintf("%q", fmt.Sprintf("t%d", i)))
	}
	return strings.Join(ts, ",")
}

func TestGuestTags(t *testing.T) {
	ctx := ctxT(t)
	op, viewer := ag.Clients["operator"], ag.Clients["viewer"]
	for _, g := range []map[string]any{
		{"name": "tag1", "boot": kboot, "state": "stopped", "tags": []string{"web", "prod"}},
		{"name": "tag2", "boot": kboot, "state": "stopped", "tags": []string{"db"}},
	} {
		if _, err := op.CreateGuest(ctx, g); err != nil {
			t.Fatalf("create %v: %v", g["name"], err)
		}
	}
	t.Cleanup(func() {
		_ = op.DeleteGuest(context.Background(), "tag1")
		_ = op.DeleteGuest(context.Background(), "tag2")
	})
	names := func(tag string) []string {
		var rows []api.GuestRow
		if err := viewer.Do(ctx, "GET", "/api/v1/guests?tag="+tag, nil, &rows); err != nil {
			t.Fatalf("list tag %s: %v", tag, err)
		}
		var ns []string
		for _, r := range rows {
			ns = append(ns, r.Name+":"+strings.Join(r.Tags, ","))
		}
		return ns
	}
	if got := fmt.Sprint(names("prod")); got != "[tag1:web,prod]" {
		t.Fatalf("tag prod lists %s", got)
	}
	if got := fmt.Sprint(names("nosuch")); got != "[]" {
		t.Fatalf("tag nosuch lists %s", got)
	}
	// An edit replaces the tags; absent, they are kept.
	if _, err := op.EditGuest(ctx, "tag2", map[string]any{"tags": []string{"db", "prod"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := op.EditGuest(ctx, "tag2", map[string]any{"vcpus": 2}); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(names("prod")); got != "[tag1:web,prod tag2:db,prod]" {
		t.Fatalf("after edit, tag prod lists %s", got)
	}
	if g, err := viewer.Guest(ctx, "tag2"); err != nil || fmt.Sprint(g.Spec.Tags) != "[db prod]" {
		t.Fatalf("guest tag2: %+v %v", g, err)
	}
}

func TestGuestErrors(t *testing.T) {
	ctx := ctxT(t)
	op := ag.Clients["operator"]
	if _, err := op.CreateGuest(ctx, map[string]any{"boot": kboot, "name": "err1", "state": "stopped"}); err != nil {
		t.Fatal(err)
	}
	big := `{"name":"x","config":"` + strings.Repeat("a", api.MaxBodyBytes) + `"}`
	cases := []struct {
		name   string
		method string
		path   string
		role   string
		body   string
		status int
		field  string
	}{
		{"malformed JSON", "POST", "/api/v1/guests", "operator", `{"name":`, 400, ""},
		{"empty body", "POST", "/api/v1/guests", "operator", ``, 400, ""},
		{"two values", "POST", "/api/v1/guests", "operator", `{"name":"a"} {}`, 400, ""},
		{"not an object", "POST", "/api/v1/guests", "operator", `[1,2]`, 400, ""},
		{"oversized body", "POST", "/api/v1/guests", "operator", big, 413, ""},
		{"unknown field", "POST", "/api/v1/guests", "operator", `{"name":"e2","boot":{"kernel":"/boot/k"},"colour":"red"}`, 400, "colour"},
		{"wrong type", "POST", "/api/v1/guests", "operator", `{"name":"e2","boot":{"kernel":"/boot/k"},"vcpus":"two"}`, 400, "vcpus"},
		{"bad memory", "POST", "/api/v1/guests", "operator", `{"name":"e2","boot":{"kernel":"/boot/k"},"memory":"lots"}`, 400, "memory"},
		{"tiny memory", "POST", "/api/v1/guests", "operator", `{"name":"e2","boot":{"kernel":"/boot/k"},"memory":1024}`, 400, "memory"},
		{"bad window", "POST", "/api/v1/guests", "operator", `{"name":"e2","boot":{"kernel":"/boot/k"},"restart_window":"soon"}`, 400, "restart_window"},
		{"bad name", "POST", "/api/v1/guests", "operator", `{"name":"-x"}`, 400, "name"},
		{"bad state", "POST", "/api/v1/guests", "operator", `{"name":"e2","boot":{"kernel":"/boot/k"},"state":"running"}`, 400, "state"},
		{"bad recovery", "POST", "/api/v1/guests", "operator", `{"name":"e2","boot":{"kernel":"/boot/k"},"recovery":"pray"}`, 400, "recovery"},
		{"unknown domain", "POST", "/api/v1/guests", "operator", `{"name":"e2","boot":{"kernel":"/boot/k"},"domain":"nodomain"}`, 400, "domain"},
		{"unknown node", "POST", "/api/v1/guests", "operator", `{"name":"e2","boot":{"kernel":"/boot/k"},"node":"nonode"}`, 400, "node"},
		{"unknown pool", "POST", "/api/v1/guests", "operator", `{"name":"e2","boot":{"kernel":"/boot/k"},"disks":[{"pool":"nopool","volume":"v"}]}`, 400, "disks[0].pool"},
		{"disk without path", "POST", "/api/v1/guests", "operator", `{"name":"e2","boot":{"kernel":"/boot/k"},"disks":[{"format":"raw"}]}`, 400, "disks[0]"},
		{"bad disk format", "POST", "/api/v1/guests", "operator", `{"name":"e2","boot":{"kernel":"/boot/k"},"disks":[{"path":"/x","format":"vmdk"}]}`, 400, "disks[0].format"},
		{"bad mac", "POST", "/api/v1/guests", "operator", `{"name":"e2","boot":{"kernel":"/boot/k"},"nics":[{"bridge":"br0","mac":"zz"}]}`, 400, "nics[0].mac"},
		{"initrd without kernel", "POST", "/api/v1/guests", "operator", `{"name":"e2","boot":{"initrd":"/i"}}`, 400, "boot.initrd"},
		{"nothing to boot", "POST", "/api/v1/guests", "operator", `{"name":"e2"}`, 400, "boot"},
		{"relative disk path", "POST", "/api/v1/guests", "operator", `{"name":"e2","disks":[{"path":"x.img"}]}`, 400, "disks[0].path"},
		{"unknown import format", "POST", "/api/v1/guests", "operator", `{"format":"vmx","config":"x"}`, 400, "format"},
		{"config without format", "POST", "/api/v1/guests", "operator", `{"name":"e2","boot":{"kernel":"/boot/k"},"config":"x"}`, 400, "format"},
		{"duplicate", "POST", "/api/v1/guests", "operator", `{"name":"err1","boot":{"kernel":"/boot/k"}}`, 409, "name"},
		{"no token", "POST", "/api/v1/guests", "none", `{"name":"e2","boot":{"kernel":"/boot/k"}}`, 401, ""},
		{"wrong token", "GET", "/api/v1/guests", "bad", ``, 401, ""},
		{"viewer creates", "POST", "/api/v1/guests", "viewer", `{"name":"e2","boot":{"kernel":"/boot/k"}}`, 403, ""},
		{"get unknown", "GET", "/api/v1/guests/nosuch", "viewer", ``, 404, "name"},
		{"edit unknown", "PUT", "/api/v1/guests/nosuch", "operator", `{}`, 404, "name"},
		{"rename", "PUT", "/api/v1/guests/err1", "operator", `{"name":"err2"}`, 400, "name"},
		{"edit state", "PUT", "/api/v1/guests/err1", "operator", `{"state":"started"}`, 400, "state"},
		{"edit node", "PUT", "/api/v1/guests/err1", "operator", `{"node":"n1"}`, 400, "node"},
		{"edit bad vcpus", "PUT", "/api/v1/guests/err1", "operator", `{"vcpus":0}`, 400, "vcpus"},
		{"delete unknown", "DELETE", "/api/v1/guests/nosuch", "operator", ``, 404, "name"},
		{"bad tag", "POST", "/api/v1/guests", "operator", `{"name":"e2","boot":{"kernel":"/boot/k"},"tags":["ok","Bad Tag"]}`, 400, "tags[1]"},
		{"html tag", "POST", "/api/v1/guests", "operator", `{"name":"e2","boot":{"kernel":"/boot/k"},"tags":["<b>"]}`, 400, "tags[0]"},
		{"long tag", "POST", "/api/v1/guests", "operator", `{"name":"e2","boot":{"kernel":"/boot/k"},"tags":["` + strings.Repeat("a", model.MaxTagLen+1) + `"]}`, 400, "tags[0]"},
		{"tag twice", "POST", "/api/v1/guests", "operator", `{"name":"e2","boot":{"kernel":"/boot/k"},"tags":["a","a"]}`, 400, "tags[1]"},
		{"too many tags", "POST", "/api/v1/guests", "operator", `{"name":"e2","boot":{"kernel":"/boot/k"},"tags":[` + manyTags(model.MaxTags+1) + `]}`, 400, "tags"},
		{"edit bad tag", "PUT", "/api/v1/guests/err1", "operator", `{"tags":[""]}`, 400, "tags[0]"},
		{"list bad tag", "GET", "/api/v1/guests?tag=a%20b", "viewer", ``, 400, "tag"},
		{"viewer deletes", "DELETE", "/api/v1/guests/err1", "viewer", ``, 403, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, e := raw(t, c.method, c.path, c.role, []byte(c.body))
			if code != c.status || e.Field != c.field || e.Message == "" {
				t.Fatalf("%s %s: got %d field %q (%s), want %d field %q", c.method, c.path, code, e.Field, e.Message, c.status, c.field)
			}
		})
	}
	// Nothing half-applied: no guest e2 exists after all that.
	if _, err := op.Guest(ctx, "e2"); !client.IsStatus(err, 404) {
		t.Fatalf("guest e2 exists after rejected requests: %v", err)
	}
	if g, _ := op.Guest(ctx, "err1"); g.Spec.CPUs != 1 || g.Spec.State != model.DesiredStopped {
		t.Fatalf("rejected edits changed err1: %+v", g.Spec)
	}
}

func TestGuestImportFormat(t *testing.T) {
	// The importers are the guestdef engineer's; here the endpoint with a
	// format it does not know, and a server with a test importer.
	ctx := ctxT(t)
	_, err := ag.Clients["operator"].ImportGuest(ctx, "nosuchformat", []byte("x"), api.GuestPatch{})
	wantErr(t, err, 400, "format")

	srv := api.New(api.Config{Store: ag.A.Store(), Node: "n1"})
	api.RegisterOps(srv, api.OpsConfig{Importers: map[string]api.Importer{"test": testImporter}})
	c := localClient(t, srv, ag.Tokens["operator"])
	g, err := c.ImportGuest(ctx, "test", []byte("name=imp1 vcpus=3"), api.GuestPatch{State: new(model.DesiredState("disabled"))})
	if err != nil {
		t.Fatalf("import: %v", err)
	}
	if g.Name != "imp1" || g.Spec.CPUs != 3 || g.Definition.VCPUs != 3 || g.Spec.Memory != 256*model.MiB || g.Spec.State != model.DesiredDisabled || g.Definition.RawXML != "<domain/>" {
		t.Fatalf("imported = %+v", g)
	}
	_, err = c.ImportGuest(ctx, "test", []byte("broken"), api.GuestPatch{})
	wantErr(t, err, 400, "config")

	// The agent's own importers (package guestdef): a Xen config as
	// /etc/xen/guest1 held it under Cluster Suite, and a libvirt XML.
	op := ag.Clients["operator"]
	xen := "name = \"xen1\"\nmemory = 512\nvcpus = 2\ndisk = [ 'file:/guest_roots/xen1.img,xvda,w' ]\nvif = [ 'mac=00:16:3e:00:00:01,bridge=xenbr0' ]\n"
	g, err = op.ImportGuest(ctx, "xen", []byte(xen), api.GuestPatch{State: new(model.DesiredState("stopped")), Recovery: new(model.Recovery("relocate"))})
	if err != nil {
		t.Fatalf("import Xen config: %v", err)
	}
	if g.Name != "xen1" || g.Spec.Memory != 512*model.MiB || g.Spec.CPUs != 2 || len(g.Definition.Disks) != 1 || g.Definition.Disks[0].Path != "/guest_roots/xen1.img" ||
		len(g.Definition.NICs) != 1 || g.Definition.NICs[0].Bridge != "xenbr0" || g.Spec.Recovery != model.RecoveryRelocate || g.Failover.Capable {
		t.Fatalf("imported Xen guest = %+v", g)
	}
	lv := `<domain type='kvm'><name>lv1</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>
<os><type arch='x86_64'>hvm</type></os>
<devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/var/lib/libvirt/images/lv1.qcow2'/><target dev='vda' bus='virtio'/></disk></devices></domain>`
	g, err = op.ImportGuest(ctx, "libvirt", []byte(lv), api.GuestPatch{Name: new("lv1b"), State: new(model.DesiredState("disabled"))})
	if err != nil {
		t.Fatalf("import libvirt XML: %v", err)
	}
	if g.Name != "lv1b" || g.Definition.Name != "lv1b" || g.Spec.Memory != 256*model.MiB || g.Definition.Disks[0].Format != "qcow2" {
		t.Fatalf("imported libvirt guest = %+v", g)
	}
	_, err = op.ImportGuest(ctx, "libvirt", []byte("<domain"), api.GuestPatch{})
	wantErr(t, err, 400, "config")
}

func TestGuestDelete(t *testing.T) {
	ctx := ctxT(t)
	op := ag.Clients["operator"]
	if _, err := op.CreateGuest(ctx, map[string]any{"boot": kboot, "name": "del1"}); err != nil {
		t.Fatal(err)
	}
	err := op.DeleteGuest(ctx, "del1")
	wantErr(t, err, 409, "name") // desired state started
	// The manager knows the guest (tests before this one may have saved a
	// manager state, which then answers for the commands).
	withState(t, func(s *manager.State) {
		if s.Guest("del1") == nil {
			if err := s.AddGuest(model.DefaultGuestSpec("del1"), false); err != nil {
				t.Fatal(err)
			}
		}
	})
	// Disabled in the record but still running as the manager sees it.
	if _, err := op.GuestCommand(ctx, "del1", "disable", ""); err != nil {
		t.Fatalf("disable: %v", err)
	}
	g, _ := op.Guest(ctx, "del1")
	if g.Spec.State != model.DesiredDisabled {
		t.Fatalf("after disable the record says %q", g.Spec.State)
	}
	withState(t, func(s *manager.State) {
		spec := g.Spec
		spec.Node = "n1"
		if s.Guest("del1") != nil {
			if err := s.RemoveGuest("del1"); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.AddGuest(spec, true); err != nil {
			t.Fatal(err)
		}
	})
	wantErr(t, op.DeleteGuest(ctx, "del1"), 409, "name")
	withState(t, func(s *manager.State) {
		mg := s.Guest("del1")
		mg.Running, mg.State = false, manager.GuestDisabled
	})
	if err := op.DeleteGuest(ctx, "del1"); err != nil {
		t.Fatalf("delete a disabled guest: %v", err)
	}
	if _, err := op.Guest(ctx, "del1"); !client.IsStatus(err, 404) {
		t.Fatalf("deleted guest still there: %v", err)
	}
}

// kboot is a boot section that makes a guest bootable without disks.
var kboot = map[string]string{"kernel": "/boot/vmlinuz"}

// stateMu serialises the tests' changes to the saved manager state.
var stateMu sync.Mutex

// withState changes the saved manager state (creating it with nodes n1
// online and n2 offline) as the manager would.
func withState(t *testing.T, fn func(*manager.State)) {
	t.Helper()
	stateMu.Lock()
	defer stateMu.Unlock()
	ctx := ctxT(t)
	s, err := savedstate.Load(ctx, ag.Cluster.Raw().Client())
	if errors.Is(err, cluster.ErrNotFound) {
		registerNode(t, "n2")
		s = manager.New(manager.Config{})
		for _, n := range []string{"n1", "n2"} {
			if err := s.AddNode(n, 8*model.GiB, 4); err != nil {
				t.Fatal(err)
			}
		}
		s.Node("n1").Status = manager.NodeOnline
	} else if err != nil {
		t.Fatal(err)
	}
	fn(s)
	if err := ag.SaveState(ctx, s); err != nil {
		t.Fatal(err)
	}
}

func TestGuestCommands(t *testing.T) {
	ctx := ctxT(t)
	op := ag.Clients["operator"]
	for _, n := range []string{"cmd1", "cmd2"} {
		if _, err := op.CreateGuest(ctx, map[string]any{"boot": kboot, "name": n, "state": "stopped", "migratable": n == "cmd1"}); err != nil {
			t.Fatal(err)
		}
	}
	registerNode(t, "n3")
	withState(t, func(s *manager.State) {
		if err := s.AddNode("n3", 8*model.GiB, 4); err != nil {
			t.Fatal(err)
		}
		s.Node("n3").Status = manager.NodeOnline
		for _, n := range []string{"cmd1", "cmd2"} {
			spec := model.DefaultGuestSpec(n)
			spec.Node, spec.Migratable = "n1", n == "cmd1"
			if err := s.AddGuest(spec, true); err != nil {
				t.Fatal(err)
			}
		}
	})
	res, err := op.GuestCommand(ctx, "cmd1", "migrate", "n3")
	if err != nil || !res.Done || res.Command != "migrate cmd1 n3" || !strings.Contains(res.Who, "test operator") {
		t.Fatalf("migrate: %+v %v", res, err)
	}
	res, err = op.GuestCommand(ctx, "cmd1", "start", "")
	if err != nil || !res.Done {
		t.Fatalf("start: %+v %v", res, err)
	}
	if g, _ := op.Guest(ctx, "cmd1"); g.Spec.State != model.DesiredStarted {
		t.Fatalf("after start the record says %q", g.Spec.State)
	}
	// Synchronous rejections from manager.Validate on the saved state.
	_, err = op.GuestCommand(ctx, "cmd1", "migrate", "n2") // offline
	wantErr(t, err, 409, "node")
	_, err = op.GuestCommand(ctx, "cmd2", "migrate", "n3") // not migratable
	wantErr(t, err, 409, "name")
	_, err = op.GuestCommand(ctx, "cmd1", "relocate", "n1") // already there
	wantErr(t, err, 409, "node")
	_, err = op.GuestCommand(ctx, "cmd1", "migrate", "nonode")
	wantErr(t, err, 400, "node")
	_, err = op.GuestCommand(ctx, "nosuch", "start", "")
	wantErr(t, err, 404, "name")
	_, err = op.GuestCommand(ctx, "cmd1", "migrate", "")
	wantErr(t, err, 400, "node")
	_, err = op.GuestCommand(ctx, "cmd1", "start", "n3")
	wantErr(t, err, 400, "node")
	_, err = ag.Clients["viewer"].GuestCommand(ctx, "cmd1", "stop", "")
	wantErr(t, err, 403, "")
	code, e := raw(t, "POST", "/api/v1/guests/cmd1/stop", "operator", []byte(`{"node":`))
	if code != 400 {
		t.Fatalf("malformed command body: %d %+v", code, e)
	}
	// The manager refuses when it applies the command: 409 with its reason.
	setHandler(t, "cmd2", func(cluster.Command) error { return errors.New("stop cmd2: agent unreachable") })
	_, err = op.GuestCommand(ctx, "cmd2", "stop", "")
	wantErr(t, err, 409, "")
	if !strings.Contains(err.Error(), "agent unreachable") {
		t.Fatalf("refusal = %v, want the manager's reason", err)
	}
	// Every request is in the audit log with who made it.
	evs, err := op.Events(ctx, client.EventFilter{Guest: "cmd1", N: 50})
	if err != nil {
		t.Fatal(err)
	}
	var msgs []string
	for _, e := range evs {
		msgs = append(msgs, e.Who+": "+e.Msg)
	}
	if !strings.Contains(strings.Join(msgs, "\n"), "test operator [token ") || !strings.Contains(strings.Join(msgs, "\n"), "requested migrate cmd1 n3") {
		t.Fatalf("audit log for cmd1 = %q", msgs)
	}
}

// localClient serves srv over plain HTTP on a loopback port for the test.
func localClient(t *testing.T, srv *api.Server, token string) *client.Client {
	t.Helper()
	hs := newHTTPServer(t, srv.Handler())
	return client.New(hs, token, &tls.Config{})
}

func TestCommandPending(t *testing.T) {
	ctx := ctxT(t)
	// A second API server on the same store, with a short wait, so the
	// manager's silence shows as 202 quickly.
	srv := api.New(api.Config{Store: ag.A.Store(), Node: "n1"})
	api.RegisterOps(srv, api.OpsConfig{CommandWait: 200 * time.Millisecond})
	c := localClient(t, srv, ag.Tokens["operator"])
	if _, err := c.CreateGuest(ctx, map[string]any{"boot": kboot, "name": "slow1", "state": "stopped"}); err != nil {
		t.Fatal(err)
	}
	leave := make(chan struct{})
	setHandler(t, "slow1", func(cluster.Command) error {
		select {
		case <-leave:
			return nil
		default:
			return apitest.ErrLeave
		}
	})
	res, err := c.GuestCommand(ctx, "slow1", "start", "")
	if err != nil || res.Done || res.ID == "" {
		t.Fatalf("start with a silent manager: %+v %v, want 202 with an id", res, err)
	}
	got, err := c.Command(ctx, res.ID)
	if err != nil || got.Done {
		t.Fatalf("pending command = %+v %v", got, err)
	}
	close(leave)
	setHandler(t, "slow2", func(cluster.Command) error { return nil })
	// A new command makes PlayManager look again at the pending ones.
	if _, err := c.CreateGuest(ctx, map[string]any{"boot": kboot, "name": "slow2", "state": "stopped"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GuestCommand(ctx, "slow2", "stop", ""); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err = c.Command(ctx, res.ID)
		if err == nil && got.Done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("command never done: %+v %v", got, err)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition with a deadline
	}
	_, err = c.Command(ctx, "nosuchid")
	wantErr(t, err, 404, "id")
}

func TestMaintenance(t *testing.T) {
	ctx := ctxT(t)
	op := ag.Clients["operator"]
	withState(t, func(*manager.State) {})
	res, err := op.Maintenance(ctx, "n1", true)
	if err != nil || !res.Done || res.Kind != manager.CmdMaintenanceOn {
		t.Fatalf("maintenance on: %+v %v", res, err)
	}
	withState(t, func(s *manager.State) { s.Node("n1").Maintenance = true })
	_, err = op.Maintenance(ctx, "n1", true)
	wantErr(t, err, 409, "name")
	if _, err := op.Maintenance(ctx, "n1", false); err != nil {
		t.Fatalf("maintenance off: %v", err)
	}
	withState(t, func(s *manager.State) { s.Node("n1").Maintenance = false })
	_, err = op.Maintenance(ctx, "nonode", true)
	wantErr(t, err, 404, "name")
	code, e := raw(t, "POST", "/api/v1/nodes/n1/maintenance", "operator", []byte(`{}`))
	if code != 400 || e.Field != "on" {
		t.Fatalf("maintenance without on: %d %+v", code, e)
	}
	_, err = ag.Clients["viewer"].Maintenance(ctx, "n1", true)
	wantErr(t, err, 403, "")
}

func TestDomains(t *testing.T) {
	ctx := ctxT(t)
	admin, op := ag.Clients["admin"], ag.Clients["operator"]
	registerNode(t, "n2")
	d, err := admin.CreateDomain(ctx, model.Domain{Name: "dom1", Members: []model.DomainMember{{Node: "n1", Priority: 2}, {Node: "n2", Priority: 1}}, Restricted: true})
	if err != nil || d.Name != "dom1" || len(d.Guests) != 0 {
		t.Fatalf("create domain: %+v %v", d, err)
	}
	_, err = admin.CreateDomain(ctx, model.Domain{Name: "dom1", Members: []model.DomainMember{{Node: "n1"}}})
	wantErr(t, err, 409, "name")
	_, err = admin.CreateDomain(ctx, model.Domain{Name: "dom2", Members: []model.DomainMember{{Node: "ghost"}}})
	wantErr(t, err, 400, "members[0].node")
	_, err = admin.CreateDomain(ctx, model.Domain{Name: "dom2"})
	wantErr(t, err, 400, "members")
	_, err = op.CreateDomain(ctx, model.Domain{Name: "dom2", Members: []model.DomainMember{{Node: "n1"}}})
	wantErr(t, err, 403, "")
	if _, err := op.CreateGuest(ctx, map[string]any{"boot": kboot, "name": "domg1", "domain": "dom1", "state": "stopped"}); err != nil {
		t.Fatal(err)
	}
	d, err = ag.Clients["viewer"].Domain(ctx, "dom1")
	if err != nil || len(d.Guests) != 1 || d.Guests[0] != "domg1" {
		t.Fatalf("get domain: %+v %v", d, err)
	}
	d, err = admin.EditDomain(ctx, "dom1", map[string]any{"nofailback": true})
	if err != nil || !d.NoFailback || !d.Restricted || len(d.Members) != 2 {
		t.Fatalf("edit domain: %+v %v", d, err)
	}
	_, err = admin.EditDomain(ctx, "dom1", map[string]any{"name": "dom9"})
	wantErr(t, err, 400, "name")
	_, err = admin.EditDomain(ctx, "nodom", map[string]any{})
	wantErr(t, err, 404, "name")
	wantErr(t, admin.DeleteDomain(ctx, "dom1"), 409, "name")
	if err := op.DeleteGuest(ctx, "domg1"); err != nil {
		t.Fatal(err)
	}
	if err := admin.DeleteDomain(ctx, "dom1"); err != nil {
		t.Fatalf("delete unused domain: %v", err)
	}
	wantErr(t, admin.DeleteDomain(ctx, "dom1"), 404, "name")
	_, err = admin.Domain(ctx, "dom1")
	wantErr(t, err, 404, "name")
}

func fenceSpy(t *testing.T) string {
	p, err := filepath.Abs("../fence/testdata/fence_spy")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("test fence agent: %v", err)
	}
	return p
}

func TestFence(t *testing.T) {
	ctx := ctxT(t)
	admin := ag.Clients["admin"]
	registerNode(t, "n2")
	stateFile := filepath.Join(t.TempDir(), "n2.power")
	cfg := map[string]any{
		"devices": []map[string]any{{
			"name": "pdu1", "agent": fenceSpy(t),
			"params": map[string]string{"ip": "192.0.2.1", "password": "s3cret", "state_file": stateFile},
			"plugs":  map[string]string{"n1": "1", "n2": "2"},
		}},
		"levels": map[string]any{"n1": []map[string]any{{"devices": []string{"pdu1"}}}, "n2": []map[string]any{{"devices": []string{"pdu1"}}}},
	}
	// Checked against the agent's metadata: a parameter it does not know
	// is refused before anything is stored.
	bad := map[string]any{"devices": []map[string]any{{"name": "pdu1", "agent": fenceSpy(t), "params": map[string]string{"ip": "192.0.2.1", "colour": "red"}}}}
	_, err := admin.SetFenceConfigValidated(ctx, bad)
	wantErr(t, err, 400, "devices")
	if !strings.Contains(err.Error(), "colour") {
		t.Fatalf("metadata check said %v, want the unknown parameter named", err)
	}
	got, err := admin.SetFenceConfigValidated(ctx, cfg)
	if err != nil {
		t.Fatalf("set fence config: %v", err)
	}
	if got.Devices[0].Params["password"] != "********" {
		t.Fatalf("set answer shows the secret: %+v", got.Devices[0].Params)
	}
	read, err := admin.FenceConfig(ctx)
	if err != nil || read.Devices[0].Params["password"] != "********" || read.Devices[0].Params["ip"] != "192.0.2.1" {
		t.Fatalf("get fence config: %+v %v", read, err)
	}
	// Sending back what was read keeps the secret.
	if _, err := admin.SetFenceConfig(ctx, read); err != nil {
		t.Fatalf("set back redacted: %v", err)
	}
	stored, err := cluster.ReadSealed[fence.Config](ctx, ag.Cluster, cluster.KeyFenceConfig)
	if err != nil || stored.Devices[0].Params["password"] != "s3cret" || stored.Devices[0].Params["ip"] != "192.0.2.1" {
		t.Fatalf("stored config = %+v %v", stored.Devices[0].Params, err)
	}
	// Issue 10, Low: re-pointed at another address, the device needs its
	// secret again (else the stored password goes wherever the editor says).
	read.Devices[0].Params["ip"] = "192.0.2.9"
	_, err = admin.SetFenceConfig(ctx, read)
	wantErr(t, err, 400, "devices[0].params.password")
	if !strings.Contains(err.Error(), "re-pointed") {
		t.Errorf("re-pointed device: %v, want the reason", err)
	}
	read.Devices[0].Params["password"] = "s3cret"
	if _, err := admin.SetFenceConfig(ctx, read); err != nil {
		t.Fatalf("re-point with the secret: %v", err)
	}
	read.Devices[0].Params["password"] = "********"
	// A redacted secret for a device without a stored one is refused.
	read.Devices[0].Name = "pdu9"
	_, err = admin.SetFenceConfig(ctx, read)
	wantErr(t, err, 400, "devices[0].params.password")
	_, err = admin.SetFenceConfig(ctx, map[string]any{"levels": map[string]any{"n2": []map[string]any{{"devices": []string{"nodev"}}}}})
	wantErr(t, err, 400, "levels")
	_, err = admin.SetFenceConfig(ctx, map[string]any{"action": "explode"})
	wantErr(t, err, 400, "action")
	_, err = ag.Clients["operator"].FenceConfig(ctx)
	wantErr(t, err, 403, "")

	tr, err := admin.FenceTest(ctx, "n2")
	if err != nil || !tr.OK || len(tr.Result.Devices) != 1 || tr.Result.Devices[0].Power != "on" {
		t.Fatalf("fence test: %+v %v", tr, err)
	}
	_, err = admin.FenceTest(ctx, "ghost")
	wantErr(t, err, 404, "node")
	out, err := admin.FenceNode(ctx, "n2")
	if err != nil || !out.OK || !out.Result.Confirmed || out.Result.Level != 1 {
		t.Fatalf("fence n2: %+v %v", out, err)
	}
	if b, _ := os.ReadFile(stateFile); strings.TrimSpace(string(b)) != "off" {
		t.Fatalf("power state after fencing = %q, want off", b)
	}
	if s, _ := json.Marshal(out); strings.Contains(string(s), "s3cret") {
		t.Fatalf("fence answer leaks the secret: %s", s)
	}
	_, err = admin.FenceNode(ctx, "n1")
	wantErr(t, err, 409, "name") // the agent serving the request
	_, err = admin.FenceNode(ctx, "ghost")
	wantErr(t, err, 404, "name")
	registerNode(t, "n4")
	_, err = admin.FenceNode(ctx, "n4")
	wantErr(t, err, 409, "name") // no levels
	_, err = ag.Clients["operator"].FenceNode(ctx, "n2")
	wantErr(t, err, 403, "")
	evs, _ := admin.Events(ctx, client.EventFilter{Node: "n2", N: 10})
	if len(evs) == 0 || !strings.Contains(evs[len(evs)-1].Msg, "fenced by operator request") {
		t.Fatalf("events for n2 = %+v", evs)
	}
	if out.Told != "" {
		t.Errorf("fencing n2, which the manager does not see failed, told it: %q", out.Told)
	}

	// A node the manager waits to fence: the operator's fence is its proof.
	withState(t, func(s *manager.State) {
		s.Node("n2").Status = manager.NodeFailed
		s.Node("n2").Fence = &manager.Fence{}
	})
	defer withState(t, func(s *manager.State) { s.Node("n2").Status, s.Node("n2").Fence = manager.NodeOffline, nil })
	out, err = admin.FenceNode(ctx, "n2")
	if err != nil || !out.OK || out.Told == "" {
		t.Fatalf("fence failed n2: %+v %v; want the manager told", out, err)
	}
	if c, err := admin.Command(ctx, out.Told); err != nil || c.Kind != manager.CmdConfirmOff || c.Node != "n2" {
		t.Fatalf("command told: %+v %v", c, err)
	}
}

func TestConfirmOff(t *testing.T) {
	ctx := ctxT(t)
	admin := ag.Clients["admin"]
	withState(t, func(s *manager.State) {
		s.Node("n2").Status = manager.NodeFailed
		s.Node("n2").Fence = &manager.Fence{}
	})
	defer withState(t, func(s *manager.State) { s.Node("n2").Status, s.Node("n2").Fence = manager.NodeOffline, nil })
	_, err := ag.Clients["operator"].ConfirmOff(ctx, "n2")
	wantErr(t, err, 403, "")
	res, err := admin.ConfirmOff(ctx, "n2")
	if err != nil || !res.Done || res.Kind != manager.CmdConfirmOff || res.Command != "confirm off n2" {
		t.Fatalf("confirm off n2: %+v %v", res, err)
	}
	// Only a failed node waiting for its fence.
	_, err = admin.ConfirmOff(ctx, "n1")
	wantErr(t, err, 409, "name")
	if !strings.Contains(err.Error(), "it is online") {
		t.Errorf("confirm off of an online node: %v, want the reason", err)
	}
	_, err = admin.ConfirmOff(ctx, "ghost")
	wantErr(t, err, 404, "name")
	code, e := raw(t, "POST", "/api/v1/nodes/n2/confirm-off", "admin", []byte(`{"sure": true}`))
	if code != 400 {
		t.Errorf("confirm-off with an unknown field: %d %+v", code, e)
	}
}

func TestPools(t *testing.T) {
	ctx := ctxT(t)
	admin := ag.Clients["admin"]
	p, err := admin.CreatePool(ctx, api.Pool{Name: "nfs1", Path: "/srv/nfs1", Shared: true})
	if err != nil || p.Name != "nfs1" || !p.Shared {
		t.Fatalf("create pool: %+v %v", p, err)
	}
	if _, err := admin.CreatePool(ctx, api.Pool{Name: "vg1", Kind: "lvm", VG: "vg_san", Shared: true}); err != nil {
		t.Fatalf("create lvm pool: %v", err)
	}
	_, err = admin.CreatePool(ctx, api.Pool{Name: "nfs1", Path: "/srv/x"})
	wantErr(t, err, 409, "name")
	_, err = admin.CreatePool(ctx, api.Pool{Name: "p2", Kind: "zfs", Path: "/srv/x"})
	wantErr(t, err, 400, "kind")
	_, err = admin.CreatePool(ctx, api.Pool{Name: "p2", Path: "relative"})
	wantErr(t, err, 400, "path")
	_, err = admin.CreatePool(ctx, api.Pool{Name: "p 2", Path: "/srv/p2"})
	wantErr(t, err, 400, "name")
	_, err = admin.CreatePool(ctx, api.Pool{Name: "p2", Kind: "lvm"})
	wantErr(t, err, 400, "vg")
	_, err = ag.Clients["operator"].CreatePool(ctx, api.Pool{Name: "p2", Path: "/srv/p2"})
	wantErr(t, err, 403, "")
	g, err := ag.Clients["operator"].CreateGuest(ctx, map[string]any{"name": "poolg", "state": "stopped", "disks": []map[string]any{{"pool": "nfs1", "volume": "poolg.qcow2"}}})
	if err != nil {
		t.Fatalf("guest on the pool: %v", err)
	}
	if !g.Failover.Capable {
		t.Fatalf("guest on a shared pool cannot fail over: %+v", g.Failover)
	}
	ps, err := ag.Clients["viewer"].Pools(ctx)
	if err != nil || len(ps) < 2 {
		t.Fatalf("list pools: %v %v", ps, err)
	}
	wantErr(t, admin.DeletePool(ctx, "nfs1"), 409, "name")
	if err := ag.Clients["operator"].DeleteGuest(ctx, "poolg"); err != nil {
		t.Fatal(err)
	}
	if err := admin.DeletePool(ctx, "nfs1"); err != nil {
		t.Fatalf("delete pool: %v", err)
	}
	wantErr(t, admin.DeletePool(ctx, "nfs1"), 404, "name")
	code, e := raw(t, "GET", "/api/v1/pools/nfs1", "viewer", nil)
	if code != 404 || e.Field != "name" {
		t.Fatalf("get deleted pool: %d %+v", code, e)
	}
}

func TestPolicy(t *testing.T) {
	ctx := ctxT(t)
	admin := ag.Clients["admin"]
	p, err := ag.Clients["viewer"].Policy(ctx)
	if err != nil || p.Fencing != model.FencingAgent || p.ShutdownPolicy != model.ShutdownMigrate {
		t.Fatalf("default policy: %+v %v", p, err)
	}
	p, err = admin.SetPolicy(ctx, map[string]any{"shutdown_policy": "freeze"})
	if err != nil || p.ShutdownPolicy != model.ShutdownFreeze || p.Fencing != model.FencingAgent {
		t.Fatalf("set policy: %+v %v", p, err)
	}
	_, err = admin.SetPolicy(ctx, map[string]any{"fencing": "prayer"})
	wantErr(t, err, 400, "fencing")
	_, err = admin.SetPolicy(ctx, map[string]any{"shutdown": "stop"})
	wantErr(t, err, 400, "shutdown")
	_, err = ag.Clients["operator"].SetPolicy(ctx, map[string]any{"shutdown_policy": "stop"})
	wantErr(t, err, 403, "")
	if p, _ := admin.Policy(ctx); p.ShutdownPolicy != model.ShutdownFreeze {
		t.Fatalf("rejected changes applied: %+v", p)
	}
	if _, err := admin.SetPolicy(ctx, map[string]any{"shutdown_policy": "migrate"}); err != nil {
		t.Fatal(err)
	}
}

// A cluster on hold refuses the commands only a manager carries out, and
// says so in its status; hold needs fence devices.
func TestHold(t *testing.T) {
	ctx := ctxT(t)
	admin := ag.Clients["admin"]
	_, err := admin.SetPolicy(ctx, map[string]any{"fencing": "watchdog", "hold": true})
	wantErr(t, err, 400, "hold")
	p, err := admin.SetPolicy(ctx, map[string]any{"hold": true})
	if err != nil || !p.Hold {
		t.Fatalf("hold on: %+v %v", p, err)
	}
	t.Cleanup(func() {
		if _, err := admin.SetPolicy(context.Background(), map[string]any{"hold": false}); err != nil {
			t.Errorf("hold off: %v", err)
		}
	})
	st, err := ag.Clients["viewer"].Status(ctx)
	if err != nil || !st.Hold {
		t.Fatalf("status on hold: hold=%v %v", st != nil && st.Hold, err)
	}
	_, err = ag.Clients["operator"].Maintenance(ctx, "n1", true)
	wantErr(t, err, 409, "")
	if err == nil || !strings.Contains(err.Error(), "on hold") {
		t.Errorf("maintenance on hold: %v, want a refusal that says the cluster is on hold", err)
	}
}

func TestEvents(t *testing.T) {
	ctx := ctxT(t)
	viewer := ag.Clients["viewer"]
	code, e := raw(t, "GET", "/api/v1/events?n=-1", "viewer", nil)
	if code != 400 || e.Field != "n" {
		t.Fatalf("n=-1: %d %+v", code, e)
	}
	code, _ = raw(t, "GET", "/api/v1/events/stream?n=x", "viewer", nil)
	if code != 400 {
		t.Fatalf("stream n=x: %d", code)
	}
	_, err := ag.Clients["none"].Events(ctx, client.EventFilter{})
	wantErr(t, err, 401, "")

	// The live stream delivers a new event.
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	got := make(chan cluster.Event, 16)
	errc := make(chan error, 1)
	go func() {
		errc <- viewer.StreamEvents(sctx, client.EventFilter{Guest: "evg1"}, func(e cluster.Event) error {
			got <- e
			return nil
		})
	}()
	// The stream starts after the current revision: keep creating events
	// until one arrives (the stream may connect after the first).
	for i := 0; ; i++ {
		name := fmt.Sprintf("evg%d", i+1)
		if i == 0 {
			if _, err := ag.Clients["operator"].CreateGuest(ctx, map[string]any{"boot": kboot, "name": name, "state": "stopped"}); err != nil {
				t.Fatal(err)
			}
		} else if err := ag.Cluster.AddEvent(ctx, cluster.Event{Kind: "guest", Guest: "evg1", Msg: fmt.Sprintf("ping %d", i)}); err != nil {
			t.Fatal(err)
		}
		select {
		case e := <-got:
			if e.Guest != "evg1" {
				t.Fatalf("streamed %+v, want only evg1's events", e)
			}
			cancel()
			if err := <-errc; err != nil {
				t.Fatalf("stream ended with %v", err)
			}
			evs, err := viewer.Events(ctx, client.EventFilter{N: 5})
			if err != nil || len(evs) == 0 || len(evs) > 5 {
				t.Fatalf("events n=5: %d %v", len(evs), err)
			}
			return
		case err := <-errc:
			t.Fatalf("stream ended early: %v", err)
		case <-time.After(500 * time.Millisecond):
			if i > 40 {
				t.Fatal("no event on the stream")
			}
		}
	}
}

func TestEventStreamHeartbeat(t *testing.T) {
	srv := api.New(api.Config{Store: ag.A.Store(), Node: "n1"})
	api.RegisterOps(srv, api.OpsConfig{Heartbeat: 20 * time.Millisecond})
	url := newHTTPServer(t, srv.Handler())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", url+"/api/v1/events/stream", nil)
	req.Header.Set("Authorization", "Bearer "+ag.Tokens["viewer"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "text/event-stream" {
		t.Fatalf("stream answer %d %q", resp.StatusCode, ct)
	}
	buf := make([]byte, 0, 4096)
	tmp := make([]byte, 512)
	for !bytes.Contains(buf, []byte(": keepalive\n\n")) {
		n, err := resp.Body.Read(tmp)
		if err != nil {
			t.Fatalf("read stream: %v (got %q)", err, buf)
		}
		buf = append(buf, tmp[:n]...)
	}
}

func TestStatusHasGuests(t *testing.T) {
	ctx := ctxT(t)
	if _, err := ag.Clients["operator"].CreateGuest(ctx, map[string]any{"boot": kboot, "name": "stat1", "state": "stopped"}); err != nil {
		t.Fatal(err)
	}
	st, err := ag.Clients["viewer"].Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Guests == nil || st.Guests.Total == 0 {
		t.Fatalf("status guests = %+v", st.Guests)
	}
	var rows []api.GuestRow
	if err := json.Unmarshal(st.Guests.Guests, &rows); err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if r.Name == "stat1" {
			return
		}
	}
	t.Fatalf("stat1 not in the status rows %+v", rows)
}

// TestEveryRouteAuth checks, for every endpoint, that no token is 401 and
// a token below the endpoint's role is 403.
func TestEveryRouteAuth(t *testing.T) {
	srv := api.New(api.Config{Store: ag.A.Store(), Node: "n1"})
	ops := api.RegisterOps(srv, api.OpsConfig{})
	below := map[api.Role]string{api.RoleOperator: "viewer", api.RoleAdmin: "operator"}
	for _, r := range ops.Routes() {
		if r.Role == api.RolePublic {
			continue
		}
		path := strings.NewReplacer("{name}", "x", "{id}", "x", "{node}", "x").Replace(r.Pattern)
		t.Run(r.Method+" "+r.Pattern, func(t *testing.T) {
			if code, _ := raw(t, r.Method, path, "none", nil); code != 401 {
				t.Fatalf("no token: %d, want 401", code)
			}
			if code, _ := raw(t, r.Method, path, "bad", nil); code != 401 {
				t.Fatalf("wrong token: %d, want 401", code)
			}
			if role, ok := below[r.Role]; ok {
				if code, _ := raw(t, r.Method, path, role, nil); code != 403 {
					t.Fatalf("%s token: %d, want 403", role, code)
				}
			}
			// An unknown name is 404 naming the path's field.
			if !strings.Contains(r.Pattern, "{") || r.Pattern == "/api/v1/events/stream" {
				return
			}
			body := map[string]string{
				"/api/v1/guests/{name}/migrate":    `{"node":"n1"}`,
				"/api/v1/guests/{name}/relocate":   `{"node":"n1"}`,
				"/api/v1/nodes/{name}/maintenance": `{"on":true}`,
			}[r.Pattern]
			if r.Method == "PUT" {
				body = `{}`
			}
			ghost := strings.NewReplacer("{name}", "ghost", "{id}", "ghost", "{node}", "ghost").Replace(r.Pattern)
			code, e := raw(t, r.Method, ghost, "admin", []byte(body))
			field := r.Pattern[strings.Index(r.Pattern, "{")+1 : strings.Index(r.Pattern, "}")]
			if code != 404 || e.Field != field {
				t.Fatalf("unknown name: %d field %q (%s), want 404 field %q", code, e.Field, e.Message, field)
			}
		})
	}
}

// TestOpenAPICoversRoutes checks that the served OpenAPI document
// describes every endpoint: those RegisterOps registers, and those the
// cluster endpoints and the agent register (found in their source).
func TestOpenAPICoversRoutes(t *testing.T) {
	code, _ := raw(t, "GET", "/api/v1/openapi.json", "none", nil)
	if code != 200 {
		t.Fatalf("openapi.json: %d", code)
	}
	b, err := api.OpenAPIJSON()
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi version %q", doc.OpenAPI)
	}
	type route struct{ method, path string }
	var routes []route
	srv := api.New(api.Config{Store: ag.A.Store(), Node: "n1"})
	for _, r := range api.RegisterOps(srv, api.OpsConfig{}).Routes() {
		routes = append(routes, route{r.Method, r.Pattern})
	}
	re := regexp.MustCompile(`Handle(?:Long)?(?:Func)?\(\s*"([A-Z]+)",\s*"(/api/v1/[^"]*)"`)
	for _, dir := range []string{".", "../agent", "../ha", "../console"} {
		files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range re.FindAllStringSubmatch(string(src), -1) {
				routes = append(routes, route{m[1], m[2]})
			}
		}
	}
	if len(routes) < 40 {
		t.Fatalf("found only %d routes", len(routes))
	}
	for _, r := range routes {
		p := doc.Paths[r.path]
		if p == nil || p[strings.ToLower(r.method)] == nil {
			t.Errorf("%s %s is not in openapi.yaml", r.method, r.path)
			continue
		}
		var op map[string]any
		if err := json.Unmarshal(p[strings.ToLower(r.method)], &op); err != nil {
			t.Fatal(err)
		}
		if op["responses"] == nil || op["summary"] == nil || op["operationId"] == nil {
			t.Errorf("%s %s: operation lacks summary, operationId or responses", r.method, r.path)
		}
	}
	// And the other way: every documented operation exists.
	for path, ops := range doc.Paths {
		for m := range ops {
			if m == "parameters" {
				continue
			}
			found := false
			for _, r := range routes {
				found = found || (r.path == path && strings.ToLower(r.method) == m)
			}
			if !found {
				t.Errorf("openapi.yaml documents %s %s, which no code registers", strings.ToUpper(m), path)
			}
		}
	}
}

// testImporter reads "name=N vcpus=V" for TestGuestImportFormat.
func testImporter(config []byte) (gd guestdef.Definition, err error) {
	var name string
	var vcpus int
	if _, err := fmt.Sscanf(string(config), "name=%s vcpus=%d", &name, &vcpus); err != nil {
		return gd, fmt.Errorf("line 1: %v", err)
	}
	gd.Name, gd.VCPUs, gd.Memory, gd.RawXML = name, vcpus, 256*model.MiB, "<domain/>"
	gd.Boot.Kernel = "/boot/vmlinuz"
	return gd, nil
}

func newHTTPServer(t *testing.T, h http.Handler) string {
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	return hs.URL
}

// TestEventStreamResume checks that a client reconnecting with
// Last-Event-ID gets the events after that one first.
func TestEventStreamResume(t *testing.T) {
	ctx := ctxT(t)
	for i := range 3 {
		if err := ag.Cluster.AddEvent(ctx, cluster.Event{Kind: "guest", Guest: "resume1", Msg: fmt.Sprintf("event %d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	evs, err := ag.Clients["viewer"].Events(ctx, client.EventFilter{Guest: "resume1"})
	if err != nil || len(evs) != 3 {
		t.Fatalf("events: %v %v", evs, err)
	}
	srv := api.New(api.Config{Store: ag.A.Store(), Node: "n1"})
	api.RegisterOps(srv, api.OpsConfig{})
	url := newHTTPServer(t, srv.Handler())
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, _ := http.NewRequestWithContext(sctx, "GET", url+"/api/v1/events/stream?guest=resume1", nil)
	req.Header.Set("Authorization", "Bearer "+ag.Tokens["viewer"])
	req.Header.Set("Last-Event-ID", evs[0].Seq)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got []string
	buf := make([]byte, 4096)
	var acc []byte
	for len(got) < 2 {
		n, err := resp.Body.Read(buf)
		if err != nil {
			t.Fatalf("read stream: %v (got %q)", err, acc)
		}
		acc = append(acc, buf[:n]...)
		got = nil
		for _, line := range strings.Split(string(acc), "\n") {
			if id, ok := strings.CutPrefix(line, "id: "); ok {
				got = append(got, id)
			}
		}
	}
	if got[0] != evs[1].Seq || got[1] != evs[2].Seq {
		t.Fatalf("resumed with %v, want %s and %s", got, evs[1].Seq, evs[2].Seq)
	}
}
