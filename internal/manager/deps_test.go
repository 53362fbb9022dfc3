package manager

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The core is pure and deterministic: neither it nor any package of this
// module it builds on may do I/O, start goroutines on timers, read the clock
// or draw random numbers. The test lists the packages the core is built
// from and checks each one of this module: its imports against a deny
// list, and its code for calls that read the clock.
func TestCoreIsPure(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	out, err := exec.Command("go", "list", "-deps", "-json=ImportPath,Dir,GoFiles,Imports,Module",
		"github.com/haven-ha/haven/internal/manager", "github.com/haven-ha/haven/internal/placement").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	denied := []string{
		"os", "os/exec", "os/signal", "net", "net/http", "io/fs", "io/ioutil", "syscall", "unsafe",
		"log", "log/slog", "context", "sync", "sync/atomic", "runtime", "path/filepath",
		"math/rand", "math/rand/v2", "crypto/rand", "embed", "plugin",
	}
	clock := []string{"Now", "Since", "Until", "Sleep", "After", "AfterFunc", "Tick", "NewTimer", "NewTicker"}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	checked := 0
	for dec.More() {
		var p struct {
			ImportPath string
			Dir        string
			GoFiles    []string
			Imports    []string
			Module     *struct{ Path string }
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		if p.Module == nil || p.Module.Path != "github.com/haven-ha/haven" {
			continue // the standard library's own use of these is not the core's
		}
		checked++
		for _, imp := range p.Imports {
			if slices.Contains(denied, imp) || strings.HasPrefix(imp, "net/") || strings.HasPrefix(imp, "os/") {
				t.Errorf("%s imports %s: the core must do no I/O and read no clock", p.ImportPath, imp)
			}
		}
		for _, f := range p.GoFiles {
			fset := token.NewFileSet()
			file, err := parser.ParseFile(fset, filepath.Join(p.Dir, f), nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			timeName := ""
			for _, imp := range file.Imports {
				if path, _ := strconv.Unquote(imp.Path.Value); path == "time" {
					timeName = "time"
					if imp.Name != nil {
						timeName = imp.Name.Name
					}
				}
			}
			if timeName == "" {
				continue
			}
			ast.Inspect(file, func(n ast.Node) bool {
				sel, ok := n.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				if id, ok := sel.X.(*ast.Ident); ok && id.Name == timeName {
					for _, c := range clock {
						if sel.Sel.Name == c {
							t.Errorf("%s: time.%s: the core gets the time from its caller", fset.Position(sel.Pos()), c)
						}
					}
				}
				return true
			})
		}
	}
	if checked < 3 {
		t.Fatalf("checked %d packages of this module; go list output changed?", checked)
	}
}
