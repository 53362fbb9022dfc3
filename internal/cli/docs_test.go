package cli

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/api/client"
	"github.com/haven-ha/haven/internal/store"
)

// docCommands returns the haven command lines in the code blocks of the
// README and docs/*.md, with where each is.
func docCommands(t *testing.T) map[string][]string {
	t.Helper()
	files, err := filepath.Glob("../../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, "../../README.md")
	out := map[string][]string{}
	start := regexp.MustCompile(`^(?:\$ |# )?(?:sudo )?(?:\S*/)?(?:bin/)?haven (.*)$`)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		in := false
		for i, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(strings.TrimSpace(line), "```") {
				in = !in
				continue
			}
			if !in {
				continue
			}
			m := start.FindStringSubmatch(strings.TrimSpace(line))
			if m == nil {
				continue
			}
			cmd := m[1]
			// Up to a comment, a pipe, a redirection or the next command.
			for _, cut := range []string{" #", "|", ";", ">", "<", "&&", "$(", "`"} {
				if j := strings.Index(cmd, cut); j >= 0 {
					cmd = cmd[:j]
				}
			}
			if strings.HasSuffix(strings.TrimSpace(cmd), "\\") || strings.Contains(cmd, "...") || strings.Contains(cmd, "…") {
				continue
			}
			args := strings.Fields(cmd)
			// Output quoted in a block ("haven guest migrate: ...") and
			// diagrams ("haven CLI / web UI") are not command lines.
			if len(args) == 0 || strings.ToLower(args[0]) != args[0] || strings.Contains(cmd, ": ") {
				continue
			}
			where := filepath.Base(f) + ":" + strconv.Itoa(i+1)
			out[where] = args
		}
	}
	return out
}

// TestDocsCommandsExist: every haven command line in the docs' examples
// names a real command with real flags, so the docs cannot drift from the
// CLI.
func TestDocsCommandsExist(t *testing.T) {
	cmds := docCommands(t)
	if len(cmds) < 50 {
		t.Fatalf("found only %d command lines in the docs", len(cmds))
	}
	for where, args := range cmds {
		root := NewRoot(&Env{Getenv: func(string) string { return "" }})
		root.InitDefaultCompletionCmd()
		c, rest, err := root.Find(args)
		if err != nil || c == root {
			t.Errorf("%s: haven %s: no such command", where, strings.Join(args, " "))
			continue
		}
		if !c.Runnable() {
			t.Errorf("%s: haven %s: %q is a group, not a command", where, strings.Join(args, " "), c.CommandPath())
			continue
		}
		if c.HasSubCommands() && len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
			t.Errorf("%s: haven %s: no command %q under %q", where, strings.Join(args, " "), rest[0], c.CommandPath())
			continue
		}
		if err := c.ParseFlags(rest); err != nil {
			t.Errorf("%s: haven %s: %v", where, strings.Join(args, " "), err)
		}
	}
}

// TestDocsFigures: figures the docs state that the code defines.
func TestDocsFigures(t *testing.T) {
	b, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`\*\*default timings\*\* \(lease TTL (\d+) s`).FindStringSubmatch(string(b))
	if m == nil {
		t.Fatal("operations.md no longer states the lease TTL its figures were measured with")
	}
	if want := store.DefaultLeaseTTL; m[1]+"s" != want.String() {
		t.Errorf("operations.md measured with lease TTL %s s, but the default is %v: measure again (scripts/bench-failover.sh)", m[1], want)
	}
	cli, err := os.ReadFile("../../docs/cli.md")
	if err != nil {
		t.Fatal(err)
	}
	m = regexp.MustCompile(`does not accept a connection within (\d+) s`).FindStringSubmatch(string(cli))
	if m == nil || m[1]+"s" != client.ConnectTimeout.String() {
		t.Errorf("cli.md states a connect timeout of %v s; the client's is %v", m, client.ConnectTimeout)
	}
	if !strings.Contains(string(cli), "silent are tried last for a minute") || client.DownFor != time.Minute {
		t.Errorf("cli.md says a host that failed is tried last for a minute; the client says %v", client.DownFor)
	}
}
