package main

import (
	"bytes"
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
	f()
	os.Stdout = old
	w.Close()
	var b bytes.Buffer
	io.Copy(&b, r)
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
