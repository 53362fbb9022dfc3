package store

import (
	"go/ast"
	"go/parser"
	"go/token"
	"strings"
	"testing"
)

// Every key constant of keys.go belongs to a family of Families (by name),
// so a new key family cannot be added without a schema version.
func TestEveryKeyHasAFamily(t *testing.T) {
	fset := token.NewFileSet()
	keys, err := parser.ParseFile(fset, "keys.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	schema, err := parser.ParseFile(fset, "schema.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	named := map[string]bool{}
	ast.Inspect(schema, func(n ast.Node) bool {
		if v, ok := n.(*ast.ValueSpec); ok && len(v.Names) == 1 && v.Names[0].Name == "Families" {
			ast.Inspect(v, func(n ast.Node) bool {
				if id, ok := n.(*ast.Ident); ok {
					named[id.Name] = true
				}
				return true
			})
		}
		return true
	})
	// The manager state's keys are under PrefixManager, versioned by
	// package savedstate.
	inManager := map[string]bool{"KeyManagerHead": true, "PrefixManagerBase": true, "PrefixManagerLog": true, "KeyManagerStateV1": true}
	for _, d := range keys.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, s := range g.Specs {
			for _, name := range s.(*ast.ValueSpec).Names {
				n := name.Name
				if n == "Prefix" || inManager[n] || !strings.HasPrefix(n, "Prefix") && !strings.HasPrefix(n, "Key") {
					continue
				}
				if !named[n] {
					t.Errorf("keys.go's %s is in no family of store.Families: give it one, with its schema version", n)
				}
			}
		}
	}
	for _, f := range Families {
		if got, ok := FamilyOf(f.Prefix + "x"); !ok || got.Prefix != f.Prefix && !strings.HasPrefix(got.Prefix, f.Prefix) {
			t.Errorf("FamilyOf(%q) = %+v", f.Prefix+"x", got)
		}
	}
}

func TestEncode(t *testing.T) {
	for _, tc := range []struct {
		v    any
		want string
	}{
		{NodeState{Online: true}, `{"schema":1,"online":true,"since":"0001-01-01T00:00:00Z"}`},
		{struct{}{}, `{"schema":1}`},
	} {
		b, err := Encode(KeyNodeState("h1"), tc.v)
		if err != nil || string(b) != tc.want {
			t.Errorf("Encode(%+v) = %s, %v; want %s", tc.v, b, err, tc.want)
		}
	}
	if _, err := Encode(KeyNodeState("h1"), "a string"); err == nil {
		t.Error("Encode of a non-object succeeded")
	}
	for _, key := range []string{KeyCACert, "/elsewhere/x"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Encode for %s (no versioned family) did not panic", key)
				}
			}()
			_, _ = Encode(key, NodeState{})
		}()
	}
}
