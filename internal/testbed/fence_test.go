package testbed

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// runFence runs scripts/fence_testbed with params as key=value lines on stdin,
// as a fence daemon does, and returns its exit code and output.
func runFence(t *testing.T, params map[string]string) (int, string) {
	t.Helper()
	path, err := FenceAgentPath()
	if err != nil {
		t.Fatal(err)
	}
	var in strings.Builder
	for k, v := range params {
		fmt.Fprintf(&in, "%s=%s\n", k, v)
	}
	in.WriteString("# a comment, then an unknown key\ndelay=0\n")
	cmd := exec.Command(path)
	cmd.Stdin = strings.NewReader(in.String())
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &ee):
		return ee.ExitCode(), string(out)
	}
	t.Fatalf("run %s: %v", path, err)
	return -1, ""
}

func with(m map[string]string, kv ...string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

func TestFenceAgentMetadata(t *testing.T) {
	path, err := FenceAgentPath()
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"-o", "metadata"}, {"--action=metadata"}} {
		out, err := exec.Command(path, args...).Output()
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		var md struct {
			Name       string `xml:"name,attr"`
			Parameters []struct {
				Name string `xml:"name,attr"`
			} `xml:"parameters>parameter"`
			Actions []struct {
				Name string `xml:"name,attr"`
			} `xml:"actions>action"`
		}
		if err := xml.Unmarshal(out, &md); err != nil {
			t.Fatalf("metadata is not XML: %v\n%s", err, out)
		}
		if md.Name != "fence_testbed" {
			t.Errorf("agent name %q", md.Name)
		}
		var params, actions []string
		for _, p := range md.Parameters {
			params = append(params, p.Name)
		}
		for _, a := range md.Actions {
			actions = append(actions, a.Name)
		}
		for _, want := range []string{"action", "plug", "port", "testbed_dir"} {
			if !strings.Contains(" "+strings.Join(params, " ")+" ", " "+want+" ") {
				t.Errorf("metadata lacks parameter %s: %v", want, params)
			}
		}
		for _, want := range []string{"on", "off", "reboot", "status", "monitor", "list", "metadata"} {
			if !strings.Contains(" "+strings.Join(actions, " ")+" ", " "+want+" ") {
				t.Errorf("metadata lacks action %s: %v", want, actions)
			}
		}
	}
}

func TestFenceAgentPowersHostsOffAndOn(t *testing.T) {
	b := ForTest(t, Options{Hosts: 2})
	h1, h2 := b.MustHost("h1"), b.MustHost("h2")
	agent := startEcho(t, h1, FullHost, RoleAgent)
	guest, err := h1.Start(context.Background(), Spec{Path: "sh", Args: []string{"-c", "sleep 1000 & wait"}, Role: "guest g1"})
	if err != nil {
		t.Fatal(err)
	}
	other, err := h2.Start(context.Background(), Spec{Path: "sleep", Args: []string{"1000"}, Role: "guest g2"})
	if err != nil {
		t.Fatal(err)
	}
	p1 := b.FenceAgentParams("h1")

	if code, out := runFence(t, with(p1, "action", "status")); code != 0 {
		t.Fatalf("status of a running host: exit %d: %s", code, out)
	}
	if code, out := runFence(t, with(p1, "action", "monitor")); code != 0 {
		t.Fatalf("monitor: exit %d: %s", code, out)
	}
	if code, out := runFence(t, with(p1, "action", "list")); code != 0 || !strings.Contains(out, "h1,"+h1.Netns) || !strings.Contains(out, "h2,") {
		t.Fatalf("list: exit %d: %q", code, out)
	}
	if code, _ := runFence(t, with(p1, "action", "status", "plug", "h9")); code != 1 {
		t.Errorf("status of an unknown host: exit %d, want 1", code)
	}

	if code, out := runFence(t, with(p1, "action", "off")); code != 0 {
		t.Fatalf("off: exit %d: %s", code, out)
	}
	for _, p := range []*Process{agent, guest} {
		select {
		case <-p.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("%s survived fence off", p.Role)
		}
	}
	if pids, _ := h1.PIDs(); len(pids) != 0 {
		t.Errorf("processes left in h1: %v", pids)
	}
	if other.Exited() {
		t.Fatal("fencing h1 killed a process of h2")
	}
	if h1.PoweredOn() {
		t.Error("the bed sees h1 on after fence off")
	}
	if code, out := runFence(t, with(p1, "action", "status")); code != 2 {
		t.Errorf("status of a fenced host: exit %d, want 2: %s", code, out)
	}
	// The old name "port", and the namespace's name as the plug.
	if code, _ := runFence(t, map[string]string{"action": "status", "port": h1.Netns, "testbed_dir": b.Dir()}); code != 2 {
		t.Errorf("status by namespace name: exit %d, want 2", code)
	}

	// A failing device fails every action and changes nothing.
	if err := b.FenceDeviceFail("h1", true); err != nil {
		t.Fatal(err)
	}
	if code, _ := runFence(t, with(p1, "action", "on")); code != 1 {
		t.Errorf("on through a failing device: exit %d, want 1", code)
	}
	if code, _ := runFence(t, with(p1, "action", "status")); code != 1 {
		t.Errorf("status through a failing device: exit %d, want 1", code)
	}
	if h1.PoweredOn() {
		t.Error("a failing device powered h1 on")
	}
	if err := b.FenceDeviceFail("h1", false); err != nil {
		t.Fatal(err)
	}

	// The bed's hooks follow what the fence agent does.
	var mu sync.Mutex
	var events []string
	event := func(e string) { mu.Lock(); events = append(events, e); mu.Unlock() }
	eventsAre := func(want string) func() bool {
		return func() bool { mu.Lock(); defer mu.Unlock(); return strings.Join(events, " ") == want }
	}
	b.SetHooks(Hooks{
		PowerOn:  func(_ context.Context, h *Host) error { event("on-" + h.Name); return nil },
		PowerOff: func(_ context.Context, h *Host) { event("off-" + h.Name) },
	})
	stopWatch := b.WatchPower(context.Background(), 5*time.Millisecond)
	defer stopWatch()

	// On runs the host's boot script; reboot kills what it started.
	if err := h1.SetBootScript("#!/bin/sh\nhostname\nexec sleep 1000\n"); err != nil {
		t.Fatal(err)
	}
	if code, out := runFence(t, with(p1, "action", "on")); code != 0 {
		t.Fatalf("on: exit %d: %s", code, out)
	}
	if code, _ := runFence(t, with(p1, "action", "status")); code != 0 {
		t.Errorf("status after on: exit %d, want 0", code)
	}
	booted := func() []ProcRecord {
		var out []ProcRecord
		for _, r := range h1.Processes() {
			if r.Role == "boot" {
				out = append(out, r)
			}
		}
		return out
	}
	eventually(t, "h1's boot script runs", func() bool { return len(booted()) == 1 })
	first := booted()[0]
	eventually(t, "the PowerOn hook runs after fence on", eventsAre("on-h1"))
	if code, out := runFence(t, with(p1, "action", "reboot")); code != 0 {
		t.Fatalf("reboot: exit %d: %s", code, out)
	}
	eventually(t, "the hooks see the reboot", eventsAre("on-h1 off-h1 on-h1"))
	eventually(t, "h1 rebooted", func() bool { r := booted(); return len(r) == 1 && r[0].PID != first.PID })
	if processAlive(first.PID, first.Start) {
		t.Error("reboot left the first boot's process running")
	}
	// The fence agent's off and the bed's PowerOff agree on the state.
	if err := b.PowerOff(t.Context(), "h1"); err != nil {
		t.Fatal(err)
	}
	if len(booted()) != 0 {
		t.Error("PowerOff left the boot script's process")
	}
	stopWatch()
	if !eventsAre("on-h1 off-h1 on-h1 off-h1")() {
		t.Errorf("hooks ran for %v; a PowerOff through the bed must run its hook once", events)
	}
	if code, _ := runFence(t, with(p1, "action", "status")); code != 2 {
		t.Errorf("status after PowerOff: exit %d, want 2", code)
	}
}
