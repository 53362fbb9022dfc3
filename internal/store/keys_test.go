package store

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The key layout lives in keys.go: no other file of the module builds a
// key from Prefix or spells "/haven/" out. Other packages name their keys
// after the constants here.
func TestKeysLiveInStore(t *testing.T) {
	root := filepath.Join("..", "..")
	var bad []string
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); name == ".git" || name == "node_modules" || name == "testdata" {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") || filepath.Base(path) == "keys.go" && filepath.Base(filepath.Dir(path)) == "store" {
			return nil
		}
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch x := n.(type) {
			case *ast.BasicLit:
				if x.Kind == token.STRING && (strings.HasPrefix(x.Value, "\"/haven/") || strings.HasPrefix(x.Value, "`/haven/")) {
					bad = append(bad, fset.Position(x.Pos()).String()+": "+x.Value)
				}
			case *ast.BinaryExpr:
				if sel, ok := x.X.(*ast.SelectorExpr); ok && x.Op == token.ADD {
					if id, ok := sel.X.(*ast.Ident); ok && id.Name == "store" && sel.Sel.Name == "Prefix" {
						bad = append(bad, fset.Position(x.Pos()).String()+": store.Prefix + ...")
					}
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bad {
		t.Errorf("%s: a store key made outside internal/store/keys.go; add it there", b)
	}
}
