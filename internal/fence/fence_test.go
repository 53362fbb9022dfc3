package fence

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// needAgent returns the path of a real fence agent, skipping the test when it
// is missing (failing in CI, where scripts/deps.sh installs fence-agents).
func needAgent(t *testing.T, name string) string {
	t.Helper()
	p, err := (&Runner{}).Resolve(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s missing in CI: %v", name, err)
		}
		t.Skipf("%s not installed (apt-get install fence-agents): %v", name, err)
	}
	return p
}

// spy is the absolute path of the test agent in testdata.
func spy(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs("testdata/fence_spy")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// syncBuf is a goroutine-safe log sink.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testRunner runs the real agents and those in testdata (an agent
// directory, as --fence-agent-dir declares one), and those in dirs.
func testRunner(t testing.TB, dirs ...string) *Runner {
	t.Helper()
	td, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	return &Runner{AgentDirs: append([]string{td}, dirs...)}
}

func newFencer(t *testing.T, cfg Config) (*Fencer, *syncBuf) {
	t.Helper()
	logs := &syncBuf{}
	f, err := New(cfg, Options{Runner: testRunner(t), Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return f, logs
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func dummyDevice(name, statusFile string, extra map[string]string) Device {
	p := map[string]string{"status_file": statusFile}
	for k, v := range extra {
		p[k] = v
	}
	return Device{Name: name, Agent: "fence_dummy", Params: p}
}

func actions(res Result) string {
	var s []string
	for _, a := range res.Attempts {
		s = append(s, strconv.Itoa(a.Level)+":"+a.Device+":"+a.Action+"="+strconv.Itoa(a.ExitCode))
	}
	return strings.Join(s, " ")
}

func TestFenceDummyOffConfirmed(t *testing.T) {
	needAgent(t, "fence_dummy")
	st := filepath.Join(t.TempDir(), "n1.status")
	if err := os.WriteFile(st, []byte("on"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, _ := newFencer(t, Config{
		Devices: []Device{dummyDevice("dummy-n1", st, nil)},
		Levels:  map[string][]Level{"n1": {{Devices: []string{"dummy-n1"}}}},
	})
	if w, err := f.Validate(context.Background()); err != nil {
		t.Fatalf("Validate: %v (warnings %v)", err, w)
	}
	res, err := f.Fence(context.Background(), "n1")
	if err != nil {
		t.Fatalf("Fence: %v", err)
	}
	if res.Level != 1 || !res.Confirmed || res.Action != ActionOff || len(res.Devices) != 1 || res.Devices[0] != "dummy-n1" {
		t.Errorf("result = %+v, want level 1 confirmed off by dummy-n1", res)
	}
	if got, want := actions(res), "1:dummy-n1:off=0 1:dummy-n1:status=2"; got != want {
		t.Errorf("attempts = %s, want %s", got, want)
	}
	if b, _ := os.ReadFile(st); string(b) != "off" {
		t.Errorf("status file = %q, want off", b)
	}
}

func TestFenceDummyFailure(t *testing.T) {
	needAgent(t, "fence_dummy")
	f, _ := newFencer(t, Config{
		Devices: []Device{{Name: "broken", Agent: "fence_dummy", Params: map[string]string{"type": "fail", "power_timeout": "1"}}},
		Levels:  map[string][]Level{"n1": {{Devices: []string{"broken"}}}},
	})
	res, err := f.Fence(context.Background(), "n1")
	if !errors.Is(err, ErrFenceFailed) {
		t.Fatalf("Fence error = %v, want ErrFenceFailed", err)
	}
	if res.Level != 0 || res.Confirmed {
		t.Errorf("result = %+v, want no level and not confirmed", res)
	}
	if got, want := actions(res), "1:broken:off=1"; got != want {
		t.Errorf("attempts = %s, want %s", got, want)
	}
	for _, want := range []string{`"n1"`, "level 1", `device "broken" off`, "exit status 1", "haven fence test n1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestFenceLevelFallback(t *testing.T) {
	needAgent(t, "fence_dummy")
	st := filepath.Join(t.TempDir(), "n2.status")
	f, _ := newFencer(t, Config{
		Devices: []Device{
			{Name: "ipmi-n2", Agent: "fence_dummy", Params: map[string]string{"type": "fail", "power_timeout": "1"}},
			dummyDevice("pdu", st, nil),
		},
		Levels: map[string][]Level{"n2": {{Devices: []string{"ipmi-n2"}}, {Devices: []string{"pdu"}}}},
	})
	res, err := f.Fence(context.Background(), "n2")
	if err != nil {
		t.Fatalf("Fence: %v", err)
	}
	if res.Level != 2 || res.Devices[0] != "pdu" || !res.Confirmed {
		t.Errorf("result = %+v, want level 2 by pdu, confirmed", res)
	}
	if got, want := actions(res), "1:ipmi-n2:off=1 2:pdu:off=0 2:pdu:status=2"; got != want {
		t.Errorf("attempts = %s, want %s", got, want)
	}
	if res.Attempts[0].OK || res.Attempts[0].Error == "" || !res.Attempts[1].OK {
		t.Errorf("attempt flags wrong: %+v", res.Attempts)
	}
}

func TestFenceNotConfirmedOffFails(t *testing.T) {
	// An agent that says it powered off while status still says on must not
	// count as a fence.
	dir := t.TempDir()
	f, _ := newFencer(t, Config{
		Devices: []Device{{Name: "liar", Agent: spy(t), Params: map[string]string{"ip": "127.0.0.1", "state_file": filepath.Join(dir, "never-written/st")}, Plugs: map[string]string{"n1": "vm1"}}},
		Levels:  map[string][]Level{"n1": {{Devices: []string{"liar"}}}},
	})
	// The state file's directory does not exist: off "succeeds" without
	// writing it (the shell redirect fails but the agent still exits 0) and
	// status reports on.
	res, err := f.Fence(context.Background(), "n1")
	if !errors.Is(err, ErrFenceFailed) {
		t.Fatalf("Fence error = %v (attempts %s), want ErrFenceFailed", err, actions(res))
	}
	if !strings.Contains(err.Error(), "still on") {
		t.Errorf("error %q does not say the node is still on", err)
	}
}

func TestFenceTimeoutKillsAgent(t *testing.T) {
	needAgent(t, "fence_dummy")
	st := filepath.Join(t.TempDir(), "st")
	slow := dummyDevice("slow", st, map[string]string{"delay": "60"})
	slow.Timeout = 300 * time.Millisecond
	f, _ := newFencer(t, Config{
		Devices: []Device{slow, dummyDevice("backup", st, nil)},
		Levels:  map[string][]Level{"n1": {{Devices: []string{"slow"}}, {Devices: []string{"backup"}}}},
	})
	res, err := f.Fence(context.Background(), "n1")
	if err != nil {
		t.Fatalf("Fence: %v", err)
	}
	a := res.Attempts[0]
	if a.OK || a.ExitCode != -1 || !strings.Contains(a.Error, "killed") || !strings.Contains(a.Error, context.DeadlineExceeded.Error()) {
		t.Errorf("first attempt = %+v, want killed on deadline", a)
	}
	if res.Level != 2 {
		t.Errorf("level = %d, want 2 after the timeout of level 1", res.Level)
	}
}

func TestFenceNoLevels(t *testing.T) {
	f, _ := newFencer(t, Config{})
	if _, err := f.Fence(context.Background(), "n9"); !errors.Is(err, ErrNotConfigured) {
		t.Errorf("Fence error = %v, want ErrNotConfigured", err)
	}
	if _, err := f.Test(context.Background(), "n9"); !errors.Is(err, ErrNotConfigured) {
		t.Errorf("Test error = %v, want ErrNotConfigured", err)
	}
}

func TestFenceContextCancelledStopsWalking(t *testing.T) {
	needAgent(t, "fence_dummy")
	st := filepath.Join(t.TempDir(), "st")
	f, _ := newFencer(t, Config{
		Devices: []Device{dummyDevice("a", st, nil), dummyDevice("b", st, nil)},
		Levels:  map[string][]Level{"n1": {{Devices: []string{"a"}}, {Devices: []string{"b"}}}},
	})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res, err := f.Fence(ctx, "n1")
	if !errors.Is(err, ErrFenceFailed) || len(res.Attempts) != 0 {
		t.Errorf("Fence on a cancelled context = %v, attempts %s; want failure without runs", err, actions(res))
	}
}

// readDump reads the spy agent's dump file as key=value lines.
func readDump(t *testing.T, path string) (map[string]string, string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	kv := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			if _, dup := kv[k]; !dup {
				kv[k] = v
			}
		}
	}
	return kv, string(b)
}

func procGone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	// A zombie waiting for its reaper is dead too.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return len(f) > 0 && f[0] == "Z"
}

func TestSecretNeverOnCommandLineAndGroupKilled(t *testing.T) {
	const secret = "S3cret-Pa55-q9"
	dump := filepath.Join(t.TempDir(), "dump")
	r := testRunner(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type ret struct {
		out Outcome
		err error
	}
	done := make(chan ret, 1)
	go func() {
		out, err := r.Run(ctx, spy(t), "off", map[string]string{"ip": "127.0.0.1", "plug": "vm1", "password": secret, "dump_file": dump, "sleep": "60"})
		done <- ret{out, err}
	}()
	waitFor(t, "the agent to start", func() bool { _, err := os.Stat(dump); return err == nil })
	kv, raw := readDump(t, dump)
	if !strings.Contains(raw, "password="+secret) {
		t.Fatalf("the agent did not get the password on stdin:\n%s", raw)
	}
	pid, _ := strconv.Atoi(kv["pid"])
	child, _ := strconv.Atoi(kv["child"])
	if pid == 0 || child == 0 {
		t.Fatalf("no pids in dump:\n%s", raw)
	}
	for _, p := range []int{pid, child} {
		for _, f := range []string{"cmdline", "environ"} {
			b, err := os.ReadFile("/proc/" + strconv.Itoa(p) + "/" + f)
			if err != nil {
				t.Fatalf("read /proc/%d/%s: %v", p, f, err)
			}
			if bytes.Contains(b, []byte(secret)) {
				t.Errorf("/proc/%d/%s holds the password: %q", p, f, b)
			}
		}
	}
	if strings.Contains(kv["cmdline"], "password") {
		t.Errorf("agent command line %q mentions the password", kv["cmdline"])
	}
	cancel()
	var res ret
	select {
	case res = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if !errors.Is(res.err, context.Canceled) || res.out.ExitCode != -1 {
		t.Errorf("Run after cancel = %+v, %v; want killed with context.Canceled", res.out, res.err)
	}
	// The agent's child (its sleep) was in the agent's process group and
	// must be gone too.
	waitFor(t, "the agent's child to die", func() bool { return procGone(child) && procGone(pid) })
}

func TestSecretsRedacted(t *testing.T) {
	const pw, token = "hunter2-XYZ", "tok-77-abc"
	dev := Device{
		Name: "spy", Agent: spy(t),
		Params:  map[string]string{"ip": "127.0.0.1", "username": "admin", "password": pw, "token": token, "leak": "1", "exit": "1"},
		Secrets: []string{"token"},
		Plugs:   map[string]string{"n1": "vm1"},
	}
	f, logs := newFencer(t, Config{Devices: []Device{dev}, Levels: map[string][]Level{"n1": {{Devices: []string{"spy"}}}}})
	res, err := f.Fence(context.Background(), "n1")
	if !errors.Is(err, ErrFenceFailed) {
		t.Fatalf("Fence error = %v, want ErrFenceFailed", err)
	}
	if !strings.Contains(res.Attempts[0].Output, "login failed for password "+Redacted) {
		t.Errorf("output %q: want the leaked password replaced by %s", res.Attempts[0].Output, Redacted)
	}
	tr, terr := f.Test(context.Background(), "n1")
	js, _ := json.Marshal([]any{res, tr, f.Config()})
	for name, text := range map[string]string{"error": err.Error(), "test error": terr.Error(), "logs": logs.String(), "json": string(js)} {
		for _, s := range []string{pw, token} {
			if strings.Contains(text, s) {
				t.Errorf("%s holds secret %q:\n%s", name, s, text)
			}
		}
	}
	// The Fencer still uses the real values.
	if f.cfg.Devices[0].Params["password"] != pw {
		t.Error("Config() redaction changed the Fencer's own configuration")
	}
}

func TestSecretRedactedFromValidationErrors(t *testing.T) {
	const secret = "Bool-S3cret-1"
	f, _ := newFencer(t, Config{
		Devices: []Device{{Name: "d", Agent: spy(t), Params: map[string]string{"ip": "h", "ssl": secret}, Secrets: []string{"ssl"}, Plugs: map[string]string{"n1": "vm1"}}},
		Levels:  map[string][]Level{"n1": {{Devices: []string{"d"}}}},
	})
	_, verr := f.Validate(context.Background())
	_, ferr := f.Fence(context.Background(), "n1")
	for _, err := range []error{verr, ferr} {
		if err == nil || !strings.Contains(err.Error(), `"ssl" must be a boolean`) || strings.Contains(err.Error(), secret) {
			t.Errorf("error = %v; want the bad value reported without the secret", err)
		}
	}
}

func TestRunnerOutcome(t *testing.T) {
	r := testRunner(t)
	base := map[string]string{"ip": "127.0.0.1", "plug": "vm1"}
	with := func(k, v string) map[string]string {
		m := map[string]string{k: v}
		for a, b := range base {
			m[a] = b
		}
		return m
	}
	tests := []struct {
		name    string
		action  string
		params  map[string]string
		code    int
		output  string
		wantErr string
	}{
		{"success", "off", base, 0, "Success: off", ""},
		{"failure", "off", with("exit", "1"), 1, "", ""},
		{"status on", "status", with("state_file", "/nonexistent/x"), 0, "Status: on", ""},
		{"other exit", "reboot", with("exit", "7"), 7, "", ""},
		{"newline in value", "off", with("username", "a\nexit=0"), 0, "", "newline"},
		{"bad name", "off", with("a b", "1"), 0, "", "parameter name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := r.Run(context.Background(), spy(t), tt.action, tt.params)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if out.ExitCode != tt.code || !strings.Contains(out.Output, tt.output) {
				t.Errorf("outcome = %+v, want exit %d with %q", out, tt.code, tt.output)
			}
		})
	}
}

func TestResolve(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "fence_mine")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	noexec := filepath.Join(dir, "fence_noexec")
	if err := os.WriteFile(noexec, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := &Runner{SearchPath: []string{dir}}
	tests := []struct {
		agent, want, wantErr string
	}{
		{"fence_mine", exe, ""},
		{exe, exe, ""},
		{"fence_noexec", "", "not found"},
		{noexec, "", "not an executable"},
		{"ipmitool", "", "fence_<kind>"},
		{"fence_../x", "", "fence_<kind>"},
		{"./fence_mine", "", "fence_<kind>"},
		{"fence_missing", "", "install the fence-agents package"},
	}
	for _, tt := range tests {
		got, err := r.Resolve(tt.agent)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Resolve(%q) = %q, %v; want error with %q", tt.agent, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Resolve(%q) = %q, %v; want %q", tt.agent, got, err, tt.want)
		}
	}
}

// TestAgentDirs: a fence_* program is run only from the search path or a
// directory an admin declared (--fence-agent-dir), by name or by absolute
// path; a declared directory others can write to, or a program root does
// not own, is refused.
func TestAgentDirs(t *testing.T) {
	script := []byte("#!/bin/sh\nexit 0\n")
	mk := func(dir string, mode os.FileMode) string {
		t.Helper()
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, "fence_foo")
		if err := os.WriteFile(p, script, 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	root := t.TempDir()
	path, declared, outside, open := filepath.Join(root, "path"), filepath.Join(root, "declared"), filepath.Join(root, "outside"), filepath.Join(root, "open")
	mk(path, 0o755)
	inDeclared := mk(declared, 0o755)
	inOutside := mk(outside, 0o755)
	inOpen := mk(open, 0o777)
	link := filepath.Join(declared, "fence_link")
	if err := os.Symlink(inOutside, link); err != nil {
		t.Fatal(err)
	}

	none := &Runner{SearchPath: []string{path}}
	r := &Runner{SearchPath: []string{path}, AgentDirs: []string{declared}}
	for _, tt := range []struct {
		r       *Runner
		agent   string
		want    string
		wantErr string
	}{
		{none, inOutside, "", "is not in the agent search path"},
		{none, inDeclared, "", "declare a directory of your own with --fence-agent-dir"},
		{r, inOutside, "", "not in the agent search path (" + path + ") or an agent directory (" + declared + ")"},
		{r, inDeclared, inDeclared, ""},
		{r, filepath.Join(declared, "..", "outside", "fence_foo"), "", "not in the agent search path"},
		{r, link, "", "not in the agent search path"},
		{r, filepath.Join(path, "fence_foo"), filepath.Join(path, "fence_foo"), ""},
		{r, "fence_foo", filepath.Join(path, "fence_foo"), ""},
		{&Runner{SearchPath: []string{outside}, AgentDirs: []string{declared}}, "fence_foo", inOutside, ""},
		{&Runner{SearchPath: []string{root}, AgentDirs: []string{open}}, "fence_foo", "", "writable by others (mode 0777)"},
		{&Runner{SearchPath: []string{root}, AgentDirs: []string{open}}, inOpen, "", "writable by others (mode 0777)"},
	} {
		got, err := tt.r.Resolve(tt.agent)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Resolve(%q) with %+v = %q, %v; want error with %q", tt.agent, tt.r, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Resolve(%q) with %+v = %q, %v; want %q", tt.agent, tt.r, got, err, tt.want)
		}
	}
	if err := CheckAgentDir(open); err == nil {
		t.Error("CheckAgentDir accepted a world-writable directory")
	}

	// A program another user owns, in a declared directory: refused.
	if err := os.Chown(inDeclared, 65534, 65534); err != nil {
		t.Skipf("chown (needs root): %v", err)
	}
	if _, err := r.Resolve("fence_foo"); err != nil {
		t.Errorf("fence_foo on the search path: %v", err)
	}
	if got, err := r.Resolve(inDeclared); err == nil || !strings.Contains(err.Error(), "owned by uid 65534") {
		t.Errorf("Resolve(%q) owned by nobody = %q, %v; want refused", inDeclared, got, err)
	}
	if err := os.Chown(declared, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if err := CheckAgentDir(declared); err == nil || !strings.Contains(err.Error(), "owned by uid 65534") {
		t.Errorf("CheckAgentDir of a directory nobody owns: %v, want refused", err)
	}
}

func TestRebootMultiDeviceLevel(t *testing.T) {
	// Two power supplies: both go off (confirmed) before either comes on.
	dir := t.TempDir()
	psu := func(name string) Device {
		return Device{Name: name, Agent: spy(t), Params: map[string]string{"ip": "127.0.0.1", "state_file": filepath.Join(dir, name)}, Plugs: map[string]string{"n1": "outlet-3"}}
	}
	f, _ := newFencer(t, Config{
		Action:  ActionReboot,
		Devices: []Device{psu("psu-a"), psu("psu-b")},
		Levels:  map[string][]Level{"n1": {{Devices: []string{"psu-a", "psu-b"}}}},
	})
	res, err := f.Fence(context.Background(), "n1")
	if err != nil {
		t.Fatalf("Fence: %v", err)
	}
	want := "1:psu-a:off=0 1:psu-a:status=2 1:psu-b:off=0 1:psu-b:status=2 1:psu-a:on=0 1:psu-b:on=0"
	if got := actions(res); got != want || !res.Confirmed {
		t.Errorf("attempts = %s (confirmed %v), want %s", got, res.Confirmed, want)
	}
}

func TestRebootSingleDevice(t *testing.T) {
	needAgent(t, "fence_dummy")
	f, _ := newFencer(t, Config{
		Action:  ActionReboot,
		Devices: []Device{dummyDevice("d", filepath.Join(t.TempDir(), "st"), nil)},
		Levels:  map[string][]Level{"n1": {{Devices: []string{"d"}}}},
	})
	res, err := f.Fence(context.Background(), "n1")
	if err != nil || actions(res) != "1:d:reboot=0" {
		t.Errorf("Fence = %s, %v; want one reboot", actions(res), err)
	}
}

func TestTest(t *testing.T) {
	needAgent(t, "fence_dummy")
	dir := t.TempDir()
	on := filepath.Join(dir, "on")
	if err := os.WriteFile(on, []byte("on"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, _ := newFencer(t, Config{
		Devices: []Device{
			dummyDevice("on-dev", on, nil),
			dummyDevice("off-dev", filepath.Join(dir, "absent"), nil),
			{Name: "bad", Agent: spy(t), Params: map[string]string{"ip": "127.0.0.1", "exit": "1"}, Plugs: map[string]string{"n1": "vm1"}},
		},
		Levels: map[string][]Level{
			"n1": {{Devices: []string{"on-dev"}}, {Devices: []string{"off-dev", "bad"}}},
			"n2": {{Devices: []string{"on-dev"}}},
		},
	})
	tr, err := f.Test(context.Background(), "n1")
	if err == nil || tr.OK {
		t.Fatalf("Test n1 = %+v, %v; want failure from device bad", tr, err)
	}
	got := ""
	for _, d := range tr.Devices {
		got += d.Device + "=" + d.Power + "/" + strconv.FormatBool(d.OK) + " "
	}
	if want := "on-dev=on/true off-dev=off/true bad=unknown/false "; got != want {
		t.Errorf("devices = %q, want %q", got, want)
	}
	if !strings.Contains(err.Error(), `device "bad" status`) {
		t.Errorf("error %q does not name the device", err)
	}
	if tr, err := f.Test(context.Background(), "n2"); err != nil || !tr.OK {
		t.Errorf("Test n2 = %+v, %v; want ok", tr, err)
	}
	if b, _ := os.ReadFile(on); string(b) != "on" {
		t.Errorf("Test changed the node's power: %q", b)
	}
	if a, err := f.TestDevice(context.Background(), "on-dev"); err != nil || !a.OK || a.Action != "monitor" {
		t.Errorf("TestDevice = %+v, %v", a, err)
	}
	if _, err := f.TestDevice(context.Background(), "nope"); err == nil {
		t.Error("TestDevice of an unknown device succeeded")
	}
}

func TestValidateAgainstMetadata(t *testing.T) {
	spyDev := func(params map[string]string, plugs map[string]string) Device {
		return Device{Name: "d", Agent: spy(t), Params: params, Plugs: plugs}
	}
	plug := map[string]string{"n1": "vm1"}
	tests := []struct {
		name     string
		dev      Device
		agent    string // a real agent the case needs
		wantErr  []string
		wantWarn string
	}{
		{name: "ok", dev: spyDev(map[string]string{"ip": "h", "ssl": "1", "method": "cycle", "sleep": "0.5"}, plug)},
		{name: "unknown parameter", dev: spyDev(map[string]string{"ip": "h", "passwrd": "x"}, plug), wantErr: []string{`no parameter "passwrd"`, "fence_spy -o metadata"}},
		{name: "missing required", dev: spyDev(map[string]string{"username": "u"}, plug), wantErr: []string{`needs parameter "ip"`, "Device address"}},
		{name: "deprecated alias satisfies", dev: spyDev(map[string]string{"ipaddr": "h"}, plug), wantWarn: `"ipaddr" of fence_spy is deprecated: use "ip"`},
		{name: "missing plug", dev: spyDev(map[string]string{"ip": "h"}, nil), wantErr: []string{`needs parameter "plug"`, "set plugs.n1"}},
		{name: "bad boolean", dev: spyDev(map[string]string{"ip": "h", "ssl": "maybe"}, plug), wantErr: []string{`"ssl" must be a boolean`}},
		{name: "bad select", dev: spyDev(map[string]string{"ip": "h", "method": "zap"}, plug), wantErr: []string{`"method" must be one of onoff, cycle`}},
		{name: "bad integer", dev: spyDev(map[string]string{"ip": "h", "exit": "one"}, plug), wantErr: []string{`"exit" must be an integer`}},
		{name: "bad seconds", dev: spyDev(map[string]string{"ip": "h", "sleep": "-1"}, plug), wantErr: []string{`"sleep" must be a number of seconds`}},
		{name: "plug on agent without plugs", agent: "fence_dummy",
			dev:     Device{Name: "d", Agent: "fence_dummy", Plugs: plug},
			wantErr: []string{"takes no plug"}},
		{name: "virsh needs username", agent: "fence_virsh",
			dev:     Device{Name: "d", Agent: "fence_virsh", Params: map[string]string{"ip": "127.0.0.1", "identity_file": "/root/.ssh/id"}, Plugs: plug},
			wantErr: []string{`needs parameter "username"`}},
		{name: "virsh ok", agent: "fence_virsh",
			dev: Device{Name: "d", Agent: "fence_virsh", Params: map[string]string{"ip": "127.0.0.1", "username": "root", "password": "pw"}, Plugs: plug}},
		{name: "ipmilan lanplus", agent: "fence_ipmilan",
			dev: Device{Name: "d", Agent: "fence_ipmilan", Params: map[string]string{"ip": "10.0.0.5", "username": "admin", "password": "pw", "lanplus": "1", "auth": "password"}, Plugs: map[string]string{}}},
		{name: "ipmilan bad auth", agent: "fence_ipmilan",
			dev:     Device{Name: "d", Agent: "fence_ipmilan", Params: map[string]string{"ip": "10.0.0.5", "auth": "kerberos"}},
			wantErr: []string{`"auth" must be one of md5, password, none`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.agent != "" {
				needAgent(t, tt.agent)
			}
			f, _ := newFencer(t, Config{Devices: []Device{tt.dev}, Levels: map[string][]Level{"n1": {{Devices: []string{"d"}}}}})
			warns, err := f.Validate(context.Background())
			if len(tt.wantErr) == 0 && err != nil {
				t.Fatalf("Validate: %v", err)
			}
			for _, w := range tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("Validate error = %v, want it to say %q", err, w)
				}
			}
			if tt.wantWarn != "" && !strings.Contains(strings.Join(warns, "\n"), tt.wantWarn) {
				t.Errorf("warnings = %q, want %q", warns, tt.wantWarn)
			}
		})
	}
}

func TestConfigCheck(t *testing.T) {
	dev := Device{Name: "d", Agent: "fence_dummy"}
	lv := map[string][]Level{"n1": {{Devices: []string{"d"}}}}
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"ok", Config{Devices: []Device{dev}, Levels: lv}, ""},
		{"duplicate device", Config{Devices: []Device{dev, dev}}, `"d" defined twice`},
		{"no name", Config{Devices: []Device{{Agent: "fence_dummy"}}}, "name"},
		{"no agent", Config{Devices: []Device{{Name: "x"}}}, "set its agent"},
		{"unknown device in level", Config{Devices: []Device{dev}, Levels: map[string][]Level{"n1": {{Devices: []string{"e"}}}}}, `no fence device "e"`},
		{"empty level", Config{Devices: []Device{dev}, Levels: map[string][]Level{"n1": {{}}}}, "level 1 has no devices"},
		{"no levels", Config{Levels: map[string][]Level{"n1": nil}}, "no levels"},
		{"action param", Config{Devices: []Device{{Name: "x", Agent: "fence_dummy", Params: map[string]string{"action": "on"}}}}, `"action" is set by Haven`},
		{"plug param", Config{Devices: []Device{{Name: "x", Agent: "fence_dummy", Params: map[string]string{"port": "1"}}}}, "use plugs"},
		{"unknown secret", Config{Devices: []Device{{Name: "x", Agent: "fence_dummy", Secrets: []string{"pin"}}}}, `secret "pin"`},
		{"bad action", Config{Action: "cycle"}, `"cycle"`},
		{"negative timeout", Config{Devices: []Device{{Name: "x", Agent: "fence_dummy", Timeout: -1}}}, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg, Options{})
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("New error = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestDeviceRedactedAndKeepSecrets(t *testing.T) {
	d := Device{
		Name: "ipmi", Agent: "fence_ipmilan",
		Params:     map[string]string{"ip": "10.0.0.5", "username": "admin", "password": "pw1", "pin": "1234"},
		Secrets:    []string{"pin"},
		Plugs:      map[string]string{"n1": "1"},
		NodeParams: map[string]map[string]string{"n2": {"password": "pw2", "ip": "10.0.0.6"}},
	}
	r := d.Redacted()
	js, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"pw1", "pw2", "1234"} {
		if strings.Contains(string(js), s) {
			t.Errorf("redacted JSON holds %q: %s", s, js)
		}
	}
	if r.Params["ip"] != "10.0.0.5" || r.NodeParams["n2"]["ip"] != "10.0.0.6" || r.Params["password"] != Redacted || r.Params["pin"] != Redacted {
		t.Errorf("redacted = %+v", r)
	}
	if d.Params["password"] != "pw1" || d.NodeParams["n2"]["password"] != "pw2" {
		t.Error("Redacted changed the original")
	}
	// A client sends the redacted device back with a new username.
	var back Device
	if err := json.Unmarshal(js, &back); err != nil {
		t.Fatal(err)
	}
	back.Params["username"] = "root"
	kept := back.KeepSecrets(d)
	if kept.Params["password"] != "pw1" || kept.Params["pin"] != "1234" || kept.NodeParams["n2"]["password"] != "pw2" || kept.Params["username"] != "root" {
		t.Errorf("KeepSecrets = %+v", kept)
	}
	// Issue 10, Low: re-pointed at another address (or another agent),
	// the device keeps no secret: it must be given again.
	moved := back
	moved.Params = maps.Clone(back.Params)
	moved.Params["ip"] = "203.0.113.9"
	if k := moved.KeepSecrets(d); k.Params["password"] != Redacted || k.Params["pin"] != Redacted {
		t.Errorf("device moved to another address kept its secrets: %+v", k)
	}
	other := back
	other.Agent = "fence_redfish"
	if k := other.KeepSecrets(d); k.Params["password"] != Redacted {
		t.Errorf("device moved to another agent kept its secrets: %+v", k)
	}
	nodeMoved := back
	nodeMoved.NodeParams = map[string]map[string]string{"n2": {"password": Redacted, "ip": "203.0.113.10"}}
	if k := nodeMoved.KeepSecrets(d); k.NodeParams["n2"]["password"] != Redacted {
		t.Errorf("node params moved to another address kept the secret: %+v", k)
	}
}

// Issue 10, Low: any executable is not a fence agent, and a newline in a
// parameter is refused when stored, not when the host must be fenced.
func TestCheckRefusesNonFenceAgentsAndNewlines(t *testing.T) {
	for _, agent := range []string{"/usr/bin/tty", "tty", "/bin/sh", "../fence_x", "sub/fence_x"} {
		c := Config{Devices: []Device{{Name: "d", Agent: agent}}}
		if err := c.Check(); err == nil || !strings.Contains(err.Error(), "not a fence agent") {
			t.Errorf("agent %q: %v, want it refused", agent, err)
		}
	}
	c := Config{Devices: []Device{{Name: "d", Agent: "fence_ipmilan", Params: map[string]string{"ip": "10.0.0.1\nplug=7"}}}}
	if err := c.Check(); err == nil || !strings.Contains(err.Error(), "newline") {
		t.Errorf("newline in a parameter: %v, want it refused at write", err)
	}
	if _, err := (&Runner{}).Resolve("/usr/bin/tty"); err == nil {
		t.Error("Resolve ran /usr/bin/tty as a fence agent")
	}
}

func TestMetadataOfRealAgents(t *testing.T) {
	cache := NewMetadataCache(&Runner{})
	for _, agent := range []string{"fence_dummy", "fence_ipmilan", "fence_redfish", "fence_virsh", "fence_sbd"} {
		t.Run(agent, func(t *testing.T) {
			needAgent(t, agent)
			md, err := cache.Get(context.Background(), agent)
			if err != nil {
				t.Fatal(err)
			}
			if md.Agent != agent || !md.HasAction("off") || !md.HasAction("status") {
				t.Errorf("metadata = %+v", md)
			}
			if p, ok := md.Param("action"); !ok || !p.Required {
				t.Errorf("action parameter = %+v, %v", p, ok)
			}
			if agent != "fence_dummy" && md.plugParam() != "plug" {
				t.Errorf("plug parameter = %q, want plug", md.plugParam())
			}
			again, err := cache.Get(context.Background(), agent)
			if err != nil || again != md {
				t.Errorf("second Get did not come from the cache")
			}
		})
	}
}

func TestMetadataCacheRunsAgentOnce(t *testing.T) {
	dir := t.TempDir()
	count := filepath.Join(dir, "count")
	agent := filepath.Join(dir, "fence_counted")
	script := "#!/bin/sh\necho x >> " + count + "\ncat <<'X'\n<resource-agent name=\"fence_counted\"><parameters><parameter name=\"action\" required=\"1\"/></parameters></resource-agent>\nX\n"
	if err := os.WriteFile(agent, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	c := NewMetadataCache(testRunner(t, dir))
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Get(context.Background(), agent); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if _, err := c.Get(context.Background(), agent); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(count)
	if n := strings.Count(string(b), "x"); n < 1 || n > 3 {
		t.Errorf("agent ran %d times for metadata, want 1 to 3 (concurrent first calls)", n)
	}
	before := len(b)
	for range 5 {
		if _, err := c.Get(context.Background(), agent); err != nil {
			t.Fatal(err)
		}
	}
	if b, _ := os.ReadFile(count); len(b) != before {
		t.Error("cached metadata was fetched again")
	}
}

func TestMetadataAgentFailure(t *testing.T) {
	dir := t.TempDir()
	agent := filepath.Join(dir, "fence_broken")
	if err := os.WriteFile(agent, []byte("#!/bin/sh\necho 'Traceback: boom' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := NewMetadataCache(testRunner(t, dir)).Get(context.Background(), agent)
	if err == nil || !strings.Contains(err.Error(), "boom") || !strings.Contains(err.Error(), "exit status 1") {
		t.Errorf("Get = %v, want the agent's failure", err)
	}
}

// BenchmarkFenceDummy measures a whole fence through the real fence_dummy:
// off, then status to confirm.
func BenchmarkFenceDummy(b *testing.B) {
	if _, err := (&Runner{}).Resolve("fence_dummy"); err != nil {
		b.Skip(err)
	}
	st := filepath.Join(b.TempDir(), "st")
	f, err := New(Config{
		Devices: []Device{dummyDevice("d", st, nil)},
		Levels:  map[string][]Level{"n1": {{Devices: []string{"d"}}}},
	}, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := os.WriteFile(st, []byte("on"), 0o600); err != nil {
			b.Fatal(err)
		}
		if _, err := f.Fence(context.Background(), "n1"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRunSpy measures the cost of one agent run itself (a shell script).
func BenchmarkRunSpy(b *testing.B) {
	p, err := filepath.Abs("testdata/fence_spy")
	if err != nil {
		b.Fatal(err)
	}
	r := testRunner(b)
	for b.Loop() {
		if _, err := r.Run(context.Background(), p, "monitor", map[string]string{"ip": "h"}); err != nil {
			b.Fatal(err)
		}
	}
}
