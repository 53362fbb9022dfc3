package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/api/client"
	"github.com/spf13/pflag"
)

// TestHelpListsFlags: every command's --help shows its flags, each with a
// description, and says how to call it.
func TestHelpListsFlags(t *testing.T) {
	code, out, errs := runCLI(t, "agent", "--help")
	if code != 0 {
		t.Fatalf("agent --help: exit %d: %s", code, errs)
	}
	for _, want := range []string{"Usage:", "haven agent [flags]", "Examples:", "--data-dir string", "--lease-ttl duration", "--qemu-binary string", "--dev"} {
		if !strings.Contains(out, want) {
			t.Errorf("agent --help lacks %q:\n%s", want, out)
		}
	}
	root := NewRoot(&Env{Getenv: func(string) string { return "" }})
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Short == "" {
			t.Errorf("%s has no short help", c.CommandPath())
		}
		c.LocalFlags().VisitAll(func(f *pflag.Flag) {
			if strings.TrimSpace(f.Usage) == "" {
				t.Errorf("%s --%s has no help", c.CommandPath(), f.Name)
			}
		})
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	code, out, _ = runCLI(t, "guest", "migrate", "--help")
	if code != 0 || !strings.Contains(out, "--wait duration") || !strings.Contains(out, "haven guest migrate web1 h3") {
		t.Errorf("guest migrate --help: exit %d:\n%s", code, out)
	}
}

// TestBadInvocations: a bad flag prints the error and the usage line
// once; a typo gets a suggestion; both exit 2.
func TestBadInvocations(t *testing.T) {
	code, out, errs := runCLI(t, "agent", "--bogus")
	if code != 2 || out != "" || strings.Count(errs, "Usage:") != 1 || !strings.Contains(errs, "unknown flag: --bogus") {
		t.Errorf("agent --bogus: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	if n := strings.Count(errs, "\n"); n > 4 {
		t.Errorf("agent --bogus printed %d lines of errors:\n%s", n, errs)
	}
	code, _, errs = runCLI(t, "gust", "list")
	if code != 2 || !strings.Contains(errs, "Did you mean this?\n\tguest") {
		t.Errorf("gust list: exit %d, stderr %q", code, errs)
	}
	code, _, errs = runCLI(t, "guest", "lst")
	if code != 2 || !strings.Contains(errs, "Did you mean this?\n\tlist") {
		t.Errorf("guest lst: exit %d, stderr %q", code, errs)
	}
	code, _, errs = runCLI(t, "guest", "start")
	if code != 2 || !strings.Contains(errs, "give one guest name") {
		t.Errorf("guest start: exit %d, stderr %q", code, errs)
	}
}

// TestCompletionAndMan: completion scripts and man pages come from the
// command tree.
func TestCompletionAndMan(t *testing.T) {
	for _, sh := range []string{"bash", "zsh", "fish"} {
		code, out, errs := runCLI(t, "completion", sh)
		if code != 0 || !strings.Contains(out, "haven") || len(out) < 1000 {
			t.Errorf("completion %s: exit %d, %d bytes, stderr %q", sh, code, len(out), errs)
		}
	}
	code, out, _ := runCLI(t, "__complete", "guest", "mi")
	if code != 0 || !strings.Contains(out, "migrate") {
		t.Errorf("__complete guest mi: exit %d: %q", code, out)
	}
	code, out, _ = runCLI(t, "__complete", "events", "--gu")
	if code != 0 || !strings.Contains(out, "--guest") {
		t.Errorf("__complete events --gu: exit %d: %q", code, out)
	}
	dir := t.TempDir()
	if code, _, errs := runCLI(t, "man", dir); code != 0 {
		t.Fatalf("man: exit %d: %s", code, errs)
	}
	b, err := os.ReadFile(filepath.Join(dir, "haven-guest-migrate.1"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "wait") || !strings.Contains(string(b), ".SH EXAMPLE") {
		t.Errorf("haven-guest-migrate.1 lacks flags or examples:\n%s", b)
	}
	if _, err := os.Stat(filepath.Join(dir, "haven.1")); err != nil {
		t.Error(err)
	}
	if code, out, _ := runCLI(t, "--help"); code != 0 || strings.Contains(out, "\n  man ") {
		t.Errorf("haven --help lists the hidden man command (exit %d):\n%s", code, out)
	}
}

// TestStatusLines: status never names a dead manager as if it were fine,
// says when there is none, and shows unreachable hosts and maintenance.
func TestStatusLines(t *testing.T) {
	for _, tt := range []struct {
		st   api.Status
		want string
	}{
		{api.Status{}, "none (election in progress)"},
		{api.Status{Manager: "h2", ManagerUnreachable: true}, "h2 UNREACHABLE"},
		{api.Status{Manager: "h2"}, "h2"},
	} {
		if got := managerLine(&tt.st); !strings.HasPrefix(got, tt.want) || (tt.want == "h2" && got != "h2") {
			t.Errorf("managerLine(%+v) = %q; want %q", tt.st, got, tt.want)
		}
	}
	for _, tt := range []struct {
		h    api.Host
		want string
	}{
		{api.Host{State: "online"}, "online"},
		{api.Host{State: "online", Maintenance: true}, "online, maintenance"},
		{api.Host{State: "online", Unreachable: true}, "unreachable"},
		{api.Host{State: "offline"}, "offline"},
	} {
		if got := hostState(tt.h); got != tt.want {
			t.Errorf("hostState(%+v) = %q; want %q", tt.h, got, tt.want)
		}
	}
}

// TestQuorumLines: a store that does not answer while enough voters do is
// electing a leader, not without quorum (status said "LOST ... 2 of 3
// voters online, 2 needed" right after the leader's host died).
func TestQuorumLines(t *testing.T) {
	for _, tt := range []struct {
		st         api.Status
		line, warn string
	}{
		{api.Status{Quorum: api.Quorum{OK: true, Online: 3, Voters: 3, Needed: 2}}, "OK (embedded store, roles off, 3 of 3 voters online, 2 needed)", ""},
		{api.Status{Store: api.StoreInfo{Roles: true}, Quorum: api.Quorum{OK: true, Online: 3, Voters: 3, Needed: 2}}, "OK (embedded store, roles enforced, 3 of 3 voters online, 2 needed)", ""},
		{api.Status{Store: api.StoreInfo{External: true}, Quorum: api.Quorum{OK: true, Online: 3, Voters: 3, Needed: 2}}, "OK (external store, 3 of 3 voters online, 2 needed)", ""},
		{api.Status{Node: "h2", Stale: true, Quorum: api.Quorum{Online: 2, Voters: 3, Needed: 2}}, "NO LEADER (embedded store, roles off, 2 of 3 voters online, 2 needed)", "no leader yet"},
		{api.Status{Node: "h2", Stale: true, Quorum: api.Quorum{Online: 1, Voters: 3, Needed: 2}}, "LOST (embedded store, roles off, 1 of 3 voters online, 2 needed)", "the store has no quorum; this is what h2 last knew"},
	} {
		line, warn := quorumLines(&tt.st)
		if line != tt.line || (tt.warn == "") != (warn == "") || !strings.Contains(warn, tt.warn) {
			t.Errorf("quorumLines(%+v) = %q, %q; want %q, %q", tt.st.Quorum, line, warn, tt.line, tt.warn)
		}
	}
}

// TestGuestPatch: the guest flags become a typed request holding only
// the fields given.
func TestGuestPatch(t *testing.T) {
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	var g guestFlags
	g.register(fs, false)
	if err := fs.Parse([]string{"--memory", "2GiB", "--disk", "/a.qcow2,format=qcow2,readonly", "--nic", "user", "--migratable=false"}); err != nil {
		t.Fatal(err)
	}
	p, err := g.patch(fs)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"memory":2147483648,"migratable":false,"disks":[{"path":"/a.qcow2","format":"qcow2","readonly":true}],"nics":[{"user":true}]}`
	if string(b) != want {
		t.Errorf("patch = %s\nwant    %s", b, want)
	}
}

// TestSelector: bulk commands pick guests by name pattern and host.
func TestSelector(t *testing.T) {
	gs := []api.GuestRow{{Name: "web2", Node: "h1"}, {Name: "db1", Node: "h1"}, {Name: "web1", Node: "h2"}, {Name: "web10", Node: "h1"}}
	for _, tt := range []struct {
		s    selector
		want string
	}{
		{selector{pattern: "web*"}, "web1 web10 web2"},
		{selector{host: "h1"}, "db1 web10 web2"},
		{selector{pattern: "web?", host: "h1"}, "web2"},
		{selector{pattern: "x*"}, ""},
	} {
		got, err := tt.s.pick(gs)
		if err != nil || strings.Join(got, " ") != tt.want {
			t.Errorf("%s: %v %v; want %s", tt.s, got, err, tt.want)
		}
	}
}

// TestDevHint: the CLI line agent --dev prints works with a custom
// --data-dir (the CLI finds the dev agent by itself only in the default).
func TestDevHint(t *testing.T) {
	if got := devStatusHint(client.DevDataDir()); got != "haven status" {
		t.Errorf("default dir: %q", got)
	}
	dir := t.TempDir()
	if got := devStatusHint(dir); got != "HAVEN_DATA_DIR="+dir+" haven status" {
		t.Errorf("custom dir: %q", got)
	}
}
