package flagfile

import (
	"flag"
	"strings"
	"testing"
	"time"
)

func newFS() (*flag.FlagSet, *string, *time.Duration, *bool, *string) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	node := fs.String("node", "def", "node name")
	ttl := fs.Duration("lease-ttl", 8*time.Second, "lease TTL")
	init := fs.Bool("init", false, "create")
	eps := fs.String("store-endpoints", "", "endpoints")
	fs.String("config", "", "the file")
	return fs, node, ttl, init, eps
}

func TestFlagsOverrideFile(t *testing.T) {
	fs, node, ttl, init, eps := newFS()
	if err := fs.Parse([]string{"--node", "cli"}); err != nil {
		t.Fatal(err)
	}
	file := "# comment\nnode: fromfile\nlease-ttl: 12s\ninit: true\nstore-endpoints:\n  - https://a:2379\n  - https://b:2379\n"
	es, err := Parse("agent.yaml", []byte(file))
	if err != nil {
		t.Fatal(err)
	}
	if err := Apply("agent.yaml", es, StdFlags(fs, "config")); err != nil {
		t.Fatal(err)
	}
	if *node != "cli" || *ttl != 12*time.Second || !*init || *eps != "https://a:2379,https://b:2379" {
		t.Fatalf("got node=%q ttl=%v init=%v eps=%q", *node, *ttl, *init, *eps)
	}
}

func TestErrorsNameTheLine(t *testing.T) {
	for _, tc := range []struct{ file, want string }{
		{"node: a\nlease-tl: 3s\n", `agent.yaml:2: unknown key "lease-tl" (did you mean "lease-ttl"?)`},
		{"node: a\n\nbogus: 1\n", `agent.yaml:3: unknown key "bogus"`},
		{"config: /x\n", `agent.yaml:1: unknown key "config"`},
		{"lease-ttl: soon\n", `agent.yaml:1: lease-ttl: invalid value`},
		{"node: a\nnode: b\n", `agent.yaml:2: "node" is set twice (first on line 1)`},
		{"node:\n  x: 1\n", `agent.yaml:2: node: want a plain value, found a mapping`},
		{"- a\n- b\n", `agent.yaml:1: want a mapping of settings`},
		{"node: [a\n", `agent.yaml: yaml:`},
	} {
		fs, _, _, _, _ := newFS()
		fs.Parse(nil)
		es, err := Parse("agent.yaml", []byte(tc.file))
		if err == nil {
			err = Apply("agent.yaml", es, StdFlags(fs, "config"))
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("file %q: error %v, want it to contain %q", tc.file, err, tc.want)
		}
	}
}

func TestEmptyFile(t *testing.T) {
	for _, f := range []string{"", "# only a comment\n"} {
		es, err := Parse("x", []byte(f))
		if err != nil || len(es) != 0 {
			t.Errorf("Parse(%q) = %v, %v", f, es, err)
		}
	}
}

func TestPrintRoundTrips(t *testing.T) {
	fs, _, _, _, _ := newFS()
	fs.Parse([]string{"--node", "h: 1", "--store-endpoints", "https://a:1,https://b:2"})
	out, err := Print(StdSettings(fs, nil, "config"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "# lease TTL\nlease-ttl: 8s\n") {
		t.Errorf("missing usage comment or value:\n%s", out)
	}
	fs2, node, ttl, _, eps := newFS()
	fs2.Parse(nil)
	es, err := Parse("printed", out)
	if err != nil {
		t.Fatal(err)
	}
	if err := Apply("printed", es, StdFlags(fs2, "config")); err != nil {
		t.Fatal(err)
	}
	if *node != "h: 1" || *ttl != 8*time.Second || *eps != "https://a:1,https://b:2" {
		t.Errorf("round trip: node=%q ttl=%v eps=%q\n%s", *node, *ttl, *eps, out)
	}
}

func TestPrintHidesSecrets(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.String("token", "s3cret", "join token")
	out, _ := Print(StdSettings(fs, map[string]bool{"token": true}))
	if strings.Contains(string(out), "s3cret") {
		t.Errorf("secret printed:\n%s", out)
	}
}
