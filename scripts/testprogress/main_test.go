package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

// capture runs f with stdout redirected and returns what it printed.
func capture(t *testing.T, f func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	var b bytes.Buffer
	done := make(chan struct{})
	go func() { io.Copy(&b, r); close(done) }() // read while f prints: a pipe holds 64 KiB
	f()
	os.Stdout = old
	w.Close()
	<-done
	return b.String()
}

func TestPrinter(t *testing.T) {
	p := &printer{start: time.Now(), running: map[string]map[string]time.Time{}, out: map[string][]string{}, slow: 10 * time.Second}
	var code int
	out := capture(t, func() {
		for _, e := range []event{
			{Action: "start", Package: "a"},
			{Action: "run", Package: "a", Test: "TestSlow"},
			{Action: "run", Package: "a", Test: "TestBad"},
			{Action: "output", Package: "a", Test: "TestBad", Output: "bad_test.go:3: it broke\n"},
			{Action: "fail", Package: "a", Test: "TestBad", Elapsed: 0.1},
		} {
			p.event(e)
		}
		p.heartbeat()
		p.event(event{Action: "pass", Package: "a", Test: "TestSlow", Elapsed: 12})
		p.event(event{Action: "fail", Package: "a", Elapsed: 12.5})
		code = p.summary()
	})
	for _, want := range []string{"--- FAIL a TestBad", "it broke", "still running: a (TestSlow", "a TestSlow passed (12.0s)", "FAIL a (12.5s)", "FAILED after"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if code != 1 {
		t.Errorf("exit code %d; want 1", code)
	}
}

// The summary ends with why each test failed: its last own lines before
// the logs it dumped, however long those are.
func TestSummarySaysWhy(t *testing.T) {
	p := &printer{start: time.Now(), running: map[string]map[string]time.Time{}, out: map[string][]string{}}
	out := capture(t, func() {
		p.event(event{Action: "run", Package: "a", Test: "TestE2E"})
		p.event(event{Action: "run", Package: "a", Test: "TestE2E/libvirt"})
		for _, l := range []string{
			"=== RUN   TestE2E/libvirt\n",
			"    e2e_test.go:10: step one took 2s\n",
			"    e2e_test.go:20: g1 not running on h1 after 90s: on h2\n",
			"        (second line of the error)\n",
			"    harness_test.go:930: ---- agent log of h1 ----\n",
		} {
			p.event(event{Action: "output", Package: "a", Test: "TestE2E/libvirt", Output: l})
		}
		for i := range 3000 {
			p.event(event{Action: "output", Package: "a", Test: "TestE2E/libvirt", Output: fmt.Sprintf("        log line %d: x\n", i)})
		}
		p.event(event{Action: "output", Package: "a", Test: "TestE2E/libvirt", Output: "    harness_test.go:950: event 21:00:00.000 manager h1 g1 started\n"})
		p.event(event{Action: "fail", Package: "a", Test: "TestE2E/libvirt"})
		p.event(event{Action: "output", Package: "a", Test: "TestE2E", Output: "--- FAIL: TestE2E (1s)\n"})
		p.event(event{Action: "fail", Package: "a", Test: "TestE2E"})
		for _, l := range []string{"panic: test timed out after 40m0s\n", "\trunning tests:\n", "\t\tTestSlow (40m0s)\n", "\n", "goroutine 1 [chan receive]:\n"} {
			p.event(event{Action: "output", Package: "b", Output: l})
		}
		for i := range 50 {
			p.event(event{Action: "output", Package: "b", Output: fmt.Sprintf("testing.(*T).Run(frame %d)\n", i)})
		}
		p.event(event{Action: "output", Package: "b", Output: "FAIL\tb\t2400.1s\n"})
		p.event(event{Action: "fail", Package: "b"})
		p.event(event{Action: "run", Package: "c", Test: "TestPanics"})
		for _, l := range []string{"    c_test.go:5: before\n", "panic: runtime error: index out of range [3] with length 3\n", "\n", "goroutine 7 [running]:\n", "c.TestPanics(0xc000)\n"} {
			p.event(event{Action: "output", Package: "c", Test: "TestPanics", Output: l})
		}
		p.event(event{Action: "fail", Package: "c", Test: "TestPanics"})
		p.summary()
	})
	_, end, _ := strings.Cut(out, "event 21:00:00.000")
	want := "why a.TestE2E/libvirt:\n" +
		"    e2e_test.go:10: step one took 2s\n" +
		"    e2e_test.go:20: g1 not running on h1 after 90s: on h2\n" +
		"why b:\n" +
		"    panic: test timed out after 40m0s\n" +
		"    \trunning tests:\n" +
		"    \t\tTestSlow (40m0s)\n" +
		"    goroutine 1 [chan receive]:\n" +
		"    testing.(*T).Run(frame 0)\n" +
		"    testing.(*T).Run(frame 1)\n" +
		"why c.TestPanics:\n" +
		"    panic: runtime error: index out of range [3] with length 3\n" +
		"    goroutine 7 [running]:\n" +
		"    c.TestPanics(0xc000)\n" +
		"FAILED after"
	if !strings.Contains(end, want) {
		t.Errorf("the output after the dumped logs lacks\n%s\nit is:\n%s", want, end)
	}
	if !strings.Contains(out, "log line 2999") {
		t.Error("a failed test's long output was cut")
	}
}
