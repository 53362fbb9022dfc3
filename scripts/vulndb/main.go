// Command vulndb builds a Go vulnerability database that govulncheck reads
// with -db file:///DIR, from the OSV entries of the golang.org/x/vulndb
// module (its data/osv directory), which the Go module proxy serves: the
// database can be had where vuln.go.dev cannot be reached.
//
//	go run ./scripts/vulndb -osv $(go mod download -json golang.org/x/vulndb@VERSION | jq -r .Dir)/data/osv \
//	    -out /tmp/vulndb -modified 2026-11-05T23:49:57Z
//
// The layout is the database's v1 API (https://go.dev/security/vuln/database#api),
// as golang.org/x/vulndb's cmd/indexdb writes it, without the gzipped copies
// that only an HTTP server needs:
//
//	index/db.json       {"modified": newest entry, or -modified if later}
//	index/modules.json  [{"path", "vulns": [{"id", "modified", "fixed"}]}], by path, vulns by id
//	index/vulns.json    [{"id", "modified", "aliases"}], by id
//	ID/GO-YYYY-NNNN.json  each entry, as it is in the module
//
// "fixed" is the latest fixed version of a module's SEMVER ranges, empty
// when a later "introduced" follows it: govulncheck reads an entry only for
// a module older than that.
//
// The entries in the repository carry no dates (they are set when Google
// publishes them), so -modified (the vulndb commit's time) dates the
// database; scripts/vulncheck.sh passes it.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"golang.org/x/mod/semver"
)

func main() {
	osvDir := flag.String("osv", "", "directory of OSV entries (GO-*.json), such as golang.org/x/vulndb's data/osv")
	out := flag.String("out", "", "directory to write the database to (created; must not exist or be empty)")
	modified := flag.String("modified", "", "the database's date when no entry is newer (RFC 3339), e.g. the vulndb commit's time")
	flag.Parse()
	if *osvDir == "" || *out == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: vulndb -osv DIR -out DIR [-modified TIME]")
		os.Exit(2)
	}
	var since time.Time
	if *modified != "" {
		t, err := time.Parse(time.RFC3339, *modified)
		if err != nil {
			fmt.Fprintf(os.Stderr, "vulndb: -modified %q: not an RFC 3339 time: %v\n", *modified, err)
			os.Exit(2)
		}
		since = t
	}
	db, err := load(*osvDir)
	if err == nil {
		err = db.write(*out, since)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "vulndb:", err)
		os.Exit(1)
	}
	fmt.Printf("vulndb: %d entries, %d modules -> %s\n", len(db.entries), len(db.modules), *out)
}

// entry is the part of an OSV entry the index needs; raw is the whole.
type entry struct {
	ID       string    `json:"id"`
	Modified time.Time `json:"modified"`
	Aliases  []string  `json:"aliases,omitempty"`
	Affected []struct {
		Package struct {
			Name string `json:"name"`
		} `json:"package"`
		Ranges []osvRange `json:"ranges"`
	} `json:"affected"`
	raw []byte
}

type osvRange struct {
	Type   string `json:"type"`
	Events []struct {
		Introduced string `json:"introduced,omitempty"`
		Fixed      string `json:"fixed,omitempty"`
	} `json:"events"`
}

type moduleVuln struct {
	ID       string    `json:"id"`
	Modified time.Time `json:"modified"`
	Fixed    string    `json:"fixed,omitempty"`
}

type module struct {
	Path  string       `json:"path"`
	Vulns []moduleVuln `json:"vulns"`
}

type vuln struct {
	ID       string    `json:"id"`
	Modified time.Time `json:"modified"`
	Aliases  []string  `json:"aliases,omitempty"`
}

type database struct {
	entries []*entry // by ID
	modules map[string]*module
}

var idRE = regexp.MustCompile(`^GO-[0-9]{4}-[0-9]{4,}$`)

// load reads every *.json file of dir (not its subdirectories) as an OSV
// entry. A file that is not one, an ID that does not match its file name,
// an affected module without a path or a version that is not semver is an
// error naming the file.
func load(dir string) (*database, error) {
	files, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read OSV entries: %w", err)
	}
	db := &database{modules: map[string]*module{}}
	for _, f := range files {
		name := f.Name()
		if f.IsDir() || filepath.Ext(name) != ".json" {
			continue
		}
		path := filepath.Join(dir, name)
		e, err := readEntry(path)
		if err != nil {
			return nil, err
		}
		if want := e.ID + ".json"; name != want {
			return nil, fmt.Errorf("%s: the entry's id is %q: the file must be named %s", path, e.ID, want)
		}
		db.entries = append(db.entries, e)
	}
	if len(db.entries) == 0 {
		return nil, fmt.Errorf("%s: no OSV entries (*.json): is it golang.org/x/vulndb's data/osv?", dir)
	}
	slices.SortFunc(db.entries, func(a, b *entry) int { return strings.Compare(a.ID, b.ID) })
	for _, e := range db.entries {
		for _, a := range e.Affected {
			m := db.modules[a.Package.Name]
			if m == nil {
				m = &module{Path: a.Package.Name}
				db.modules[m.Path] = m
			}
			m.Vulns = append(m.Vulns, moduleVuln{ID: e.ID, Modified: e.Modified, Fixed: latestFixed(a.Ranges)})
		}
	}
	return db, nil
}

func readEntry(path string) (*entry, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	e := &entry{}
	if err := json.Unmarshal(raw, e); err != nil {
		return nil, fmt.Errorf("%s: not an OSV entry: %w", path, err)
	}
	if !idRE.MatchString(e.ID) {
		return nil, fmt.Errorf("%s: id %q is not of the form GO-YYYY-NNNN", path, e.ID)
	}
	if len(e.Affected) == 0 {
		return nil, fmt.Errorf("%s: no affected module", path)
	}
	for i, a := range e.Affected {
		if a.Package.Name == "" {
			return nil, fmt.Errorf("%s: affected[%d] has no package name", path, i)
		}
		for _, r := range a.Ranges {
			for _, ev := range r.Events {
				for _, v := range []string{ev.Introduced, ev.Fixed} {
					if r.Type == "SEMVER" && v != "" && v != "0" && !semver.IsValid("v"+v) {
						return nil, fmt.Errorf("%s: affected[%d] (%s): version %q is not semver", path, i, a.Package.Name, v)
					}
				}
			}
		}
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, raw); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	e.raw = compact.Bytes()
	return e, nil
}

// latestFixed is the highest "fixed" version of the SEMVER ranges, or ""
// if some range has an "introduced" above it (the module is vulnerable again
// after it) or none has a fix: the index's "fixed", below which govulncheck
// reads the entry. Versions have no "v" in OSV.
func latestFixed(ranges []osvRange) string {
	less := func(a, b string) bool { return semver.Compare("v"+a, "v"+b) < 0 }
	fixed := ""
	for _, r := range ranges {
		if r.Type != "SEMVER" {
			continue
		}
		for _, ev := range r.Events {
			if ev.Fixed != "" && (fixed == "" || less(fixed, ev.Fixed)) {
				fixed = ev.Fixed
			}
		}
	}
	for _, r := range ranges {
		if r.Type != "SEMVER" {
			continue
		}
		for _, ev := range r.Events {
			if fixed != "" && ev.Introduced != "" && ev.Introduced != "0" && less(fixed, ev.Introduced) {
				return ""
			}
		}
	}
	return fixed
}

// write writes the database to dir, which must not exist or be empty.
// since dates it when no entry is newer.
func (db *database) write(dir string, since time.Time) error {
	if old, err := os.ReadDir(dir); err == nil && len(old) > 0 {
		return fmt.Errorf("%s is not empty: give a new directory", dir)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for _, d := range []string{"index", "ID"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	modified := since
	vulns := make([]vuln, 0, len(db.entries))
	for _, e := range db.entries {
		if e.Modified.After(modified) {
			modified = e.Modified
		}
		vulns = append(vulns, vuln{ID: e.ID, Modified: e.Modified, Aliases: e.Aliases})
		if err := os.WriteFile(filepath.Join(dir, "ID", e.ID+".json"), e.raw, 0o644); err != nil {
			return err
		}
	}
	modules := make([]*module, 0, len(db.modules))
	for _, m := range db.modules {
		modules = append(modules, m) // vulns already by ID: entries were added in order
	}
	slices.SortFunc(modules, func(a, b *module) int { return strings.Compare(a.Path, b.Path) })
	for name, v := range map[string]any{
		"db.json": struct {
			Modified time.Time `json:"modified"`
		}{modified},
		"modules.json": modules,
		"vulns.json":   vulns,
	} {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "index", name), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}
