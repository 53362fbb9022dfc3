package main

import (
	"bytes"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/haven-ha/haven/internal/testbed"
)

func TestSplitArgs(t *testing.T) {
	tests := []struct {
		in    []string
		flags map[string]string
		pos   []string
	}{
		{[]string{"3", "--leg"}, map[string]string{"leg": ""}, []string{"3"}},
		{[]string{"--bed", "hvn2", "h1"}, map[string]string{"bed": "hvn2"}, []string{"h1"}},
		{[]string{"--bed=hvn2", "h1", "on"}, map[string]string{"bed": "hvn2"}, []string{"h1", "on"}},
		{[]string{"h1", "--role", "agent", "--", "sleep", "-x", "--y"}, map[string]string{"role": "agent"}, []string{"h1", "sleep", "-x", "--y"}},
		{[]string{"h1", "ls", "-l"}, map[string]string{}, []string{"h1", "ls", "-l"}},
	}
	for _, tt := range tests {
		flags, pos := splitArgs(tt.in)
		if !reflect.DeepEqual(flags, tt.flags) || !reflect.DeepEqual(pos, tt.pos) {
			t.Errorf("splitArgs(%q) = %v %q, want %v %q", tt.in, flags, pos, tt.flags, tt.pos)
		}
	}
}

func cli(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String() + errb.String()
}

func TestCLIUpFaultsDown(t *testing.T) {
	if os.Geteuid() != 0 || testbed.RequireTools() != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root and the test bed's tools")
		}
		t.Skip("needs root and the test bed's tools")
	}
	code, out := cli(t, "up", "2")
	if code != 0 {
		t.Fatalf("up: %d %s", code, out)
	}
	id := regexp.MustCompile(`test bed (hvn\d+) up`).FindStringSubmatch(out)
	if id == nil {
		t.Fatalf("up printed no bed id: %s", out)
	}
	bed := "--bed=" + id[1]
	t.Cleanup(func() { cli(t, "down", bed) })

	for _, step := range [][]string{
		{"start", bed, "h1", "--role", "agent", "--", "sleep", "1000"},
		{"cut", bed, "h2"},
		{"partition", bed, "h1/h2"},
		{"fencefail", bed, "h2", "on"},
	} {
		if code, out := cli(t, step...); code != 0 {
			t.Fatalf("%v: %d %s", step, code, out)
		}
	}
	_, out = cli(t, "status", bed)
	for _, want := range []string{"partition h1/h2", "(agent)", "cut", "fails"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	if code, out := cli(t, "exec", bed, "h1", "hostname"); code != 0 || !strings.Contains(out, "h1") {
		t.Errorf("exec hostname: %d %q", code, out)
	}
	if code, _ := cli(t, "exec", bed, "h1", "false"); code != 1 {
		t.Errorf("exec false: exit %d, want 1", code)
	}
	if code, out := cli(t, "agentkill", bed, "h1"); code != 0 {
		t.Errorf("agentkill: %d %s", code, out)
	}
	// libvirt: boot h1's daemons (detached), refuse a second libvirtd, kill
	// libvirtd and restart it alone.
	if code, out := cli(t, "libvirt", bed, "h1"); code != 0 || !strings.Contains(out, "libvirt up on h1") {
		t.Fatalf("libvirt: %d %s", code, out)
	}
	if code, out := cli(t, "libvirt", bed, "h1"); code == 0 || !strings.Contains(out, "already runs") {
		t.Errorf("second libvirt: %d %s", code, out)
	}
	if code, out := cli(t, "libvirtdkill", bed, "h1"); code != 0 {
		t.Errorf("libvirtdkill: %d %s", code, out)
	}
	if code, out := cli(t, "libvirt", bed, "h1"); code != 0 {
		t.Errorf("libvirt after libvirtdkill: %d %s", code, out)
	}
	if _, out := cli(t, "status", bed); !strings.Contains(out, "(libvirtd)") || !strings.Contains(out, "(virtlogd)") {
		t.Errorf("status lacks h1's libvirt daemons:\n%s", out)
	}
	if code, out := cli(t, "poweroff", bed, "h3"); code == 0 || !strings.Contains(out, `no host "h3"`) {
		t.Errorf("poweroff of an unknown host: %d %s", code, out)
	}
	if code, out := cli(t, "down", bed); code != 0 {
		t.Fatalf("down: %d %s", code, out)
	}
	if _, err := os.Stat("/run/netns/" + id[1] + "-h1"); err == nil {
		t.Error("down left h1's namespace")
	}
}
