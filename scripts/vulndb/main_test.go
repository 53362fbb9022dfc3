package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The fixture's three entries give the layout govulncheck reads: entries
// by ID, modules by path with their vulns by ID, the newest date.
func TestBuildFixture(t *testing.T) {
	db, err := load("testdata/osv")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "db")
	if err := db.write(out, time.Date(2026, 11, 5, 23, 49, 57, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	zero := `"modified":"0001-01-01T00:00:00Z"`
	d2099 := `"modified":"2099-02-03T04:05:06Z"`
	for name, want := range map[string]string{
		// An entry newer than -modified dates the database.
		"index/db.json": `{` + d2099 + `}`,
		"index/modules.json": `[` +
			`{"path":"example.com/abandoned","vulns":[{"id":"GO-2098-0003",` + zero + `}]},` +
			`{"path":"example.com/other","vulns":[{"id":"GO-2099-0002",` + d2099 + `,"fixed":"0.0.0-20990101000000-abcdefabcdef"}]},` +
			// GO-2099-0002 is vulnerable again from 1.4.0: no "fixed".
			`{"path":"example.com/vulnerable","vulns":[{"id":"GO-2099-0001",` + zero + `,"fixed":"1.2.0"},{"id":"GO-2099-0002",` + d2099 + `}]}` +
			`]`,
		"index/vulns.json": `[` +
			`{"id":"GO-2098-0003",` + zero + `},` +
			`{"id":"GO-2099-0001",` + zero + `,"aliases":["CVE-2099-0001"]},` +
			`{"id":"GO-2099-0002",` + d2099 + `}` +
			`]`,
	} {
		got, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Errorf("%s:\n got %s\nwant %s", name, got, want)
		}
	}
	// Each entry is there whole, compacted.
	got, err := os.ReadFile(filepath.Join(out, "ID", "GO-2099-0001.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(got), `{"schema_version":"1.3.1","id":"GO-2099-0001",`) ||
		!strings.Contains(string(got), `"symbols":["Parse"]`) {
		t.Errorf("ID/GO-2099-0001.json = %s", got)
	}
	ids, _ := filepath.Glob(filepath.Join(out, "ID", "*.json"))
	if len(ids) != 3 {
		t.Errorf("ID/ has %d entries, want 3", len(ids))
	}

	// With no newer entry, -modified dates the database.
	db.entries = db.entries[:2]
	out2 := filepath.Join(t.TempDir(), "db")
	if err := db.write(out2, time.Date(2026, 11, 5, 23, 49, 57, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(out2, "index/db.json")); string(got) != `{"modified":"2026-11-05T23:49:57Z"}` {
		t.Errorf("db.json = %s", got)
	}
	// The database is not written over another.
	if err := db.write(out, time.Time{}); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("write over a database: %v, want an error saying it is not empty", err)
	}
}

func TestLatestFixed(t *testing.T) {
	r := func(events ...string) osvRange {
		var o osvRange
		o.Type = "SEMVER"
		for _, e := range events {
			kind, v, _ := strings.Cut(e, "=")
			ev := struct {
				Introduced string `json:"introduced,omitempty"`
				Fixed      string `json:"fixed,omitempty"`
			}{}
			if kind == "i" {
				ev.Introduced = v
			} else {
				ev.Fixed = v
			}
			o.Events = append(o.Events, ev)
		}
		return o
	}
	for _, c := range []struct {
		name   string
		ranges []osvRange
		want   string
	}{
		{"one fix", []osvRange{r("i=0", "f=1.2.0")}, "1.2.0"},
		{"semver order, not text", []osvRange{r("i=0", "f=1.9.0", "i=1.10.0", "f=1.10.2")}, "1.10.2"},
		{"across ranges", []osvRange{r("i=0", "f=0.5.0"), r("i=1.0.0", "f=1.0.3")}, "1.0.3"},
		{"reintroduced later", []osvRange{r("i=0", "f=1.0.0", "i=2.0.0")}, ""},
		{"reintroduced in another range", []osvRange{r("i=0", "f=1.0.0"), r("i=2.0.0")}, ""},
		{"no fix", []osvRange{r("i=0")}, ""},
		{"pseudo-version", []osvRange{r("i=0", "f=0.0.0-20200101000000-abcdefabcdef")}, "0.0.0-20200101000000-abcdefabcdef"},
		{"prerelease below release", []osvRange{r("i=0", "f=1.0.0-rc.1", "i=1.0.0-rc.2", "f=1.0.0")}, "1.0.0"},
		{"not semver ranges are ignored", []osvRange{{Type: "GIT"}}, ""},
	} {
		if got := latestFixed(c.ranges); got != c.want {
			t.Errorf("%s: latestFixed = %q, want %q", c.name, got, c.want)
		}
	}
}

// Bad input is refused, naming the file and what is wrong with it.
func TestLoadRefuses(t *testing.T) {
	for _, c := range []struct {
		name, file, body, want string
	}{
		{"not JSON", "GO-2099-0001.json", `{"id":`, "GO-2099-0001.json: not an OSV entry"},
		{"id and file name differ", "GO-2099-0001.json", `{"id":"GO-2099-0002","affected":[{"package":{"name":"m"}}]}`, "must be named GO-2099-0002.json"},
		{"bad id", "X.json", `{"id":"X","affected":[{"package":{"name":"m"}}]}`, `id "X" is not of the form GO-YYYY-NNNN`},
		{"no module", "GO-2099-0001.json", `{"id":"GO-2099-0001","affected":[]}`, "no affected module"},
		{"no module path", "GO-2099-0001.json", `{"id":"GO-2099-0001","affected":[{"package":{"name":""}}]}`, "affected[0] has no package name"},
		{"not semver", "GO-2099-0001.json", `{"id":"GO-2099-0001","affected":[{"package":{"name":"m"},"ranges":[{"type":"SEMVER","events":[{"introduced":"0"},{"fixed":"1.x"}]}]}]}`, `version "1.x" is not semver`},
		{"bad date", "GO-2099-0001.json", `{"id":"GO-2099-0001","modified":"yesterday","affected":[{"package":{"name":"m"}}]}`, "not an OSV entry"},
	} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, c.file), []byte(c.body), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := load(dir)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), c.file) {
			t.Errorf("%s: load: %v, want an error naming %s and saying %q", c.name, err, c.file, c.want)
		}
	}
	if _, err := load(t.TempDir()); err == nil || !strings.Contains(err.Error(), "no OSV entries") {
		t.Errorf("empty directory: %v, want an error saying there are no entries", err)
	}
}
