package fence

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"
)

// Exit codes of the fence-agents protocol.
const (
	ExitSuccess = 0 // the action worked; for status: the node is on
	ExitFailure = 1 // the action failed or the device could not be reached
	ExitOff     = 2 // for status: the node is off
)

// Redacted replaces a secret wherever Haven shows a device or an agent's
// output.
const Redacted = "********"

// defaultSecretNames are parameters of the standard agents that hold a secret
// whether or not a device lists them in Secrets.
var defaultSecretNames = map[string]bool{
	"password":         true,
	"passwd":           true,
	"snmp_priv_passwd": true,
	"community":        true,
	"hexadecimal_kg":   true,
}

// IsSecretName reports whether a parameter of this name is always treated as
// a secret.
func IsSecretName(name string) bool { return defaultSecretNames[name] }

// maxOutput caps what is kept of an agent's stdout and of its stderr.
const maxOutput = 64 << 10

// Runner runs fence agents with the fence-agents stdin protocol: no
// arguments, one key=value line per parameter on stdin. Parameters, and so
// secrets, never appear on a command line or in the environment.
type Runner struct {
	// SearchPath is where bare agent names (fence_ipmilan) are looked up. Nil
	// means $PATH followed by /usr/sbin, /sbin and /usr/local/sbin.
	SearchPath []string
	// AgentDirs are directories an admin declared for fence agents of
	// their own (agent --fence-agent-dir), searched after SearchPath.
	AgentDirs []string
	// Env is the agents' environment. Nil means Haven's own.
	Env []string
}

// Outcome is what one agent run did.
type Outcome struct {
	ExitCode int
	// Stdout is the agent's standard output with secrets redacted.
	Stdout []byte
	// Output is stdout and stderr together, secrets redacted, trimmed.
	Output   string
	Duration time.Duration
}

// dirs returns the directories agents may come from: the search path and
// the declared agent directories, absolute and cleaned.
func (r *Runner) dirs() (search, declared []string) {
	sp := r.SearchPath
	if sp == nil {
		sp = append(filepath.SplitList(os.Getenv("PATH")), "/usr/sbin", "/sbin", "/usr/local/sbin")
	}
	clean := func(dirs []string) []string {
		var out []string
		for _, d := range dirs {
			if d != "" && filepath.IsAbs(d) {
				out = append(out, filepath.Clean(d))
			}
		}
		return out
	}
	return clean(sp), clean(r.AgentDirs)
}

// Resolve turns an agent name into the executable to run: a fence_* program
// in a directory of the search path or an agent directory, named by its
// bare name or its absolute path. The directory (after resolving symlinks)
// and the program must be owned by root and writable by no one else.
func (r *Runner) Resolve(agent string) (string, error) {
	search, declared := r.dirs()
	dirs := append(slices.Clip(search), declared...)
	where := "the agent search path (" + strings.Join(search, ":") + ")"
	if len(declared) > 0 {
		where += " or an agent directory (" + strings.Join(declared, ":") + ")"
	} else {
		where += " (declare a directory of your own with --fence-agent-dir)"
	}
	if filepath.IsAbs(agent) {
		if !strings.HasPrefix(filepath.Base(agent), "fence_") {
			return "", fmt.Errorf("fence agent %q: not a fence_* program", agent)
		}
		real, err := filepath.EvalSymlinks(agent)
		if err != nil {
			return "", fmt.Errorf("fence agent %q: %w", agent, err)
		}
		for _, d := range dirs {
			rd, err := filepath.EvalSymlinks(d)
			if err != nil || rd != filepath.Dir(real) {
				continue
			}
			if err := CheckAgentDir(d); err != nil {
				return "", fmt.Errorf("fence agent %q: %w", agent, err)
			}
			return checkExecutable(agent)
		}
		return "", fmt.Errorf("fence agent %q is not in %s: not run", agent, where)
	}
	if !strings.HasPrefix(agent, "fence_") || strings.ContainsAny(agent, "/\\ ") || !validParamName(agent) {
		return "", fmt.Errorf("fence agent %q: name must be fence_<kind> (such as fence_ipmilan) or an absolute path", agent)
	}
	var refused error
	for _, d := range dirs {
		p, err := checkExecutable(filepath.Join(d, agent))
		if err == nil {
			err = CheckAgentDir(d)
		}
		if err == nil {
			return p, nil
		}
		if refused == nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, errNotExecutable) {
			refused = err
		}
	}
	if refused != nil {
		return "", refused
	}
	return "", fmt.Errorf("fence agent %q not found in %s: install the fence-agents package", agent, where)
}

// CheckAgentDir checks that dir, a directory agents are run from as root,
// exists and that only root (or Haven's user) can change what it holds.
func CheckAgentDir(dir string) error {
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return fmt.Errorf("fence agent directory %s: %w", dir, err)
	}
	fi, err := os.Stat(real)
	if err != nil {
		return fmt.Errorf("fence agent directory %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("fence agent directory %s is not a directory", dir)
	}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok && sys.Uid != 0 && int(sys.Uid) != os.Geteuid() {
		return fmt.Errorf("fence agent directory %s is owned by uid %d, not root: its agents are not run", dir, sys.Uid)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("fence agent directory %s is writable by others (mode %04o): its agents are not run", dir, fi.Mode().Perm())
	}
	return nil
}

var errNotExecutable = errors.New("not an executable file")

func checkExecutable(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("fence agent %q: %w", path, err)
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return "", fmt.Errorf("fence agent %q: %w", path, errNotExecutable)
	}
	// The agent runs as root: only a program root (or Haven's user) owns
	// and no one else can change.
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		if sys.Uid != 0 && int(sys.Uid) != os.Geteuid() {
			return "", fmt.Errorf("fence agent %q is owned by uid %d, not root: not run", path, sys.Uid)
		}
		if fi.Mode().Perm()&0o022 != 0 {
			return "", fmt.Errorf("fence agent %q is writable by others (mode %04o): not run", path, fi.Mode().Perm())
		}
	}
	return path, nil
}

// stdinFor builds the agent's stdin. It refuses names or values that would
// break the line protocol (a newline in a value could smuggle in another
// parameter).
func stdinFor(action string, params map[string]string) ([]byte, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "action=%s\n", action)
	for _, k := range sortedKeys(params) {
		if !validParamName(k) {
			return nil, fmt.Errorf("parameter name %q: use letters, digits, '_' or '-'", k)
		}
		if strings.ContainsAny(params[k], "\n\r\x00") {
			return nil, fmt.Errorf("parameter %q: value holds a newline or NUL, which the agent protocol cannot carry", k)
		}
		fmt.Fprintf(&b, "%s=%s\n", k, params[k])
	}
	return b.Bytes(), nil
}

// Run runs agent (a name or path, see Resolve) for one action with params on
// its stdin. The values of the parameters named in secrets, and of those
// IsSecretName reports, are redacted from the outcome and from any error. An
// exit status is reported in the Outcome, not as an error; the error says the
// agent could not be run or was killed because ctx ended, in which case its
// whole process group is killed.
func (r *Runner) Run(ctx context.Context, agent, action string, params map[string]string, secrets ...string) (Outcome, error) {
	redact := redactor(params, secrets)
	path, err := r.Resolve(agent)
	if err != nil {
		return Outcome{}, err
	}
	in, err := stdinFor(action, params)
	if err != nil {
		return Outcome{}, fmt.Errorf("fence agent %q action %s: %w", agent, action, err)
	}
	cmd := exec.CommandContext(ctx, path)
	cmd.Args = []string{filepath.Base(path)}
	cmd.Dir = "/"
	cmd.Env = r.Env
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr capped
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// Kill the group: agents run helpers (ipmitool, ssh) that must not
		// outlive a timed-out fence.
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = 2 * time.Second
	start := time.Now()
	runErr := cmd.Run()
	out := Outcome{
		Duration: time.Since(start),
		Stdout:   []byte(redact(stdout.String())),
		Output:   redact(strings.TrimSpace(strings.TrimSpace(stdout.String()) + "\n" + strings.TrimSpace(stderr.String()))),
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		out.ExitCode = -1
		return out, fmt.Errorf("fence agent %q action %s: killed after %s: %w (output: %s)", agent, action, out.Duration.Round(time.Millisecond), ctxErr, orNone(out.Output))
	}
	var exitErr *exec.ExitError
	switch {
	case runErr == nil:
	case errors.As(runErr, &exitErr) && exitErr.Exited():
		out.ExitCode = exitErr.ExitCode()
	default:
		out.ExitCode = -1
		return out, fmt.Errorf("fence agent %q action %s: %s", agent, action, redact(runErr.Error()))
	}
	return out, nil
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// redactor returns a function that replaces every secret value in a text.
func redactor(params map[string]string, secrets []string) func(string) string {
	var vals []string
	for k, v := range params {
		if v != "" && (IsSecretName(k) || slices.Contains(secrets, k)) {
			vals = append(vals, v)
		}
	}
	// Longest first, so a secret containing another is replaced whole.
	sort.Slice(vals, func(i, j int) bool { return len(vals[i]) > len(vals[j]) })
	return func(s string) string {
		for _, v := range vals {
			s = strings.ReplaceAll(s, v, Redacted)
		}
		return s
	}
}

// capped keeps the first maxOutput bytes written to it.
type capped struct{ b bytes.Buffer }

func (c *capped) Write(p []byte) (int, error) {
	if room := maxOutput - c.b.Len(); room > 0 {
		c.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (c *capped) String() string { return c.b.String() }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
