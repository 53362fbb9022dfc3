package store_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/fence"
	"github.com/haven-ha/haven/internal/hostctl"
	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/notify"
	"github.com/haven-ha/haven/internal/storage"
	"github.com/haven-ha/haven/internal/store"
)

var rewrite = flag.Bool("schema.rewrite", false, "rewrite testdata/schema/v1 from the older goldens")

// golden is one record of a key family as an older release stored it.
type golden struct {
	file string // under testdata/schema/<dir>/
	key  string
	new  func() any // a pointer to the type this build reads it into
}

// The records of every versioned key family, as stored before versions
// existed: by the previous release (commit 235b719, written by its own
// types: see the commit that added these files), or, for the families
// younger than it, by this repository before versions (v0-main). A record
// type this test cannot name (unexported in its package) is read as a map:
// that still checks its version.
var goldens = map[string][]golden{
	"v0-235b719": {
		{"cluster-config", store.KeyClusterConfig, func() any { return new(store.ClusterConfig) }},
		{"manager-info", store.KeyManagerInfo, func() any { return new(store.ManagerInfo) }},
		{"node-reg", store.KeyNodeReg("h1"), func() any { return new(store.NodeRecord) }},
		{"node-live", store.KeyNodeLive("h1"), func() any { return new(model.NodeFacts) }},
		{"node-state", store.KeyNodeState("h1"), func() any { return new(store.NodeState) }},
		{"token", store.KeyToken("tok1"), func() any { return new(store.TokenRecord) }},
		{"user", api.KeyUser("alice"), func() any { return new(api.UserRecord) }},
		{"session", store.PrefixSessions + "0123abcd", func() any { return new(map[string]any) }},
		{"policy", store.KeyPolicy, func() any { return new(cluster.Policy) }},
		{"guest", cluster.KeyGuest("web1"), func() any { return new(cluster.Guest) }},
		{"domain", cluster.KeyDomain("d1"), func() any { return new(model.Domain) }},
		{"fence-config", store.KeyFenceConfig, func() any { return new(fence.Config) }},
		{"pool", store.PrefixPools + "shared", func() any { return new(storage.Pool) }},
		{"pool-health", cluster.KeyPoolHealth("h1", "shared"), func() any { return new(cluster.PoolHealth) }},
		{"command", cluster.KeyCommand("cmd1"), func() any { return new(cluster.Command) }},
		{"order", cluster.KeyOrder("h1", "web1"), func() any { return new(hostctl.Order) }},
		{"report", cluster.KeyReport("h1", "web1"), func() any { return new(hostctl.Report) }},
		{"shutdown", store.PrefixShutdown + "h1", func() any { return new(map[string]any) }},
		{"event", store.PrefixEvents + "0001", func() any { return new(cluster.Event) }},
	},
	"v0-main": {
		{"revocation", store.KeyRevoked("0a1b"), func() any { return new(store.Revocation) }},
		{"notify", store.KeyNotify, func() any { return new(notify.Config) }},
	},
}

// A newer agent reads every older version: each record of an older format
// decodes into this build's type without losing a member (every member of
// the old record is in what this build writes back, with the same value),
// this build writes it as testdata/schema/v1 (its format, first member
// "schema": 1), and reads that back to the same value.
func TestSchemaGoldens(t *testing.T) {
	for dir, gs := range goldens {
		for _, g := range gs {
			t.Run(dir+"/"+g.file, func(t *testing.T) {
				old, err := os.ReadFile(filepath.Join("testdata", "schema", dir, g.file+".json"))
				if err != nil {
					t.Fatal(err)
				}
				if v, err := store.Schema(old); err != nil || v != 0 {
					t.Fatalf("an old record's version = %d, %v; want 0 (none)", v, err)
				}
				got := g.new()
				if err := store.Decode(g.key, old, got); err != nil {
					t.Fatalf("decode the old record: %v", err)
				}
				enc, err := store.Encode(g.key, got)
				if err != nil {
					t.Fatal(err)
				}
				if lost := missing(t, old, enc); len(lost) > 0 {
					t.Errorf("members of the old record lost on the way through this build: %s\nold %s\nnew %s", strings.Join(lost, ", "), old, enc)
				}
				path := filepath.Join("testdata", "schema", "v1", g.file+".json")
				if *rewrite {
					if err := os.WriteFile(path, append(enc, '\n'), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				v1, err := os.ReadFile(path)
				if err != nil {
					t.Fatalf("%v (run with -schema.rewrite to write it)", err)
				}
				v1 = bytes.TrimSpace(v1)
				if !bytes.Equal(v1, enc) {
					t.Errorf("this build writes\n%s\nthe v1 golden is\n%s\n(a format change needs a new schema version: see store.Families)", enc, v1)
				}
				if !bytes.HasPrefix(v1, []byte(`{"schema":1`)) {
					t.Errorf("v1 record does not start with its version: %s", v1)
				}
				again := g.new()
				if err := store.Decode(g.key, v1, again); err != nil {
					t.Fatalf("decode the v1 record: %v", err)
				}
				if m, ok := again.(*map[string]any); ok {
					delete(*m, "schema") // a struct has no such field
				}
				if !reflect.DeepEqual(again, got) {
					t.Errorf("v1 reads as %+v, v0 as %+v", again, got)
				}
			})
		}
	}
}

// missing lists the members of the old JSON object (recursively into
// objects) that the new one lacks or holds with another value.
func missing(t *testing.T, old, new []byte) []string {
	t.Helper()
	var o, n any
	if err := json.Unmarshal(old, &o); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(new, &n); err != nil {
		t.Fatal(err)
	}
	var lost []string
	var walk func(path string, o, n any)
	walk = func(path string, o, n any) {
		om, ok := o.(map[string]any)
		if !ok {
			if !reflect.DeepEqual(o, n) {
				lost = append(lost, path)
			}
			return
		}
		nm, ok := n.(map[string]any)
		if !ok {
			lost = append(lost, path)
			return
		}
		for k, v := range om {
			walk(path+"."+k, v, nm[k])
		}
	}
	walk("", o, n)
	return lost
}

// A record of a newer version than this build reads is refused with an
// error naming it, by Decode and by CheckSchema (which writers call before
// replacing a record), never read as if it were known.
func TestSchemaNewerRefused(t *testing.T) {
	key := cluster.KeyGuest("web1")
	rec := []byte(`{"schema":2,"spec":{"name":"web1","new_field":true}}`)
	var g cluster.Guest
	err := store.Decode(key, rec, &g)
	var se *model.SchemaError
	if !errors.As(err, &se) || se.Have != 2 || se.Know != 1 {
		t.Fatalf("Decode of a newer record: %v, want a SchemaError 2 > 1", err)
	}
	if !strings.Contains(err.Error(), key) || !strings.Contains(err.Error(), "upgrade this host's haven") {
		t.Errorf("error %q does not name the key or say what to do", err)
	}
	if g.Spec.Name != "" {
		t.Errorf("the newer record was read anyway: %+v", g)
	}
	if err := store.CheckSchema(key, rec); !errors.As(err, &se) {
		t.Errorf("CheckSchema: %v", err)
	}
	// Not written first (another encoder): still seen.
	if err := store.CheckSchema(key, []byte(`{"spec":{},"schema":3}`)); !errors.As(err, &se) || se.Have != 3 {
		t.Errorf("CheckSchema with the version last: %v", err)
	}
	// Families without versions are not records.
	if err := store.CheckSchema(store.KeyCACert, []byte("-----BEGIN CERTIFICATE-----")); err != nil {
		t.Errorf("CheckSchema of a PEM: %v", err)
	}
}
