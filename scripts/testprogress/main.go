// Command testprogress reads `go test -json` on stdin and prints progress
// for people: each package's result as it finishes, each slow test, a
// line every minute naming what still runs, and the output of every
// failed test. The raw JSON goes to the file named by -log. It exits 1 if
// any test or package failed (or the stream ended without a result).
//
// Its last lines say why each failed test failed: a CI page often shows
// only the end of the output, and a failed end-to-end test's own output
// ends with hundreds of lines of logs dumped for the reader.
//
//	go test -json ./... | go run ./scripts/testprogress -log /tmp/x.json
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

type event struct {
	Time    time.Time
	Action  string
	Package string
	Test    string
	Elapsed float64
	Output  string
}

func main() {
	logPath := flag.String("log", "", "write the raw go test -json stream here")
	slow := flag.Duration("slow", 20*time.Second, "print the tests that take longer than this")
	every := flag.Duration("every", time.Minute, "say what still runs this often")
	flag.Parse()
	var raw io.Writer = io.Discard
	if *logPath != "" {
		f, err := os.Create(*logPath)
		if err != nil {
			fmt.Fprintln(os.Stderr, "testprogress:", err)
			os.Exit(2)
		}
		defer f.Close()
		raw = f
	}
	p := &printer{start: time.Now(), running: map[string]map[string]time.Time{}, out: map[string][]string{}, slow: *slow}
	go func() {
		for range time.Tick(*every) {
			p.heartbeat()
		}
	}()
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		fmt.Fprintf(raw, "%s\n", line)
		var e event
		if json.Unmarshal(line, &e) != nil {
			fmt.Println(string(line)) // build errors and the like
			continue
		}
		p.event(e)
	}
	os.Exit(p.summary())
}

type printer struct {
	mu      sync.Mutex
	start   time.Time
	running map[string]map[string]time.Time // package -> test -> start
	out     map[string][]string             // package/test -> output
	slow    time.Duration
	pass    int
	failed  []string
	why     []string // per failed test or package: its reason lines, for the summary
}

// maxOutput bounds the lines kept (and printed) of one test's output.
const maxOutput = 5000

func (p *printer) event(e event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	key := e.Package + " " + e.Test
	switch e.Action {
	case "start":
		p.running[e.Package] = map[string]time.Time{}
	case "run":
		if p.running[e.Package] == nil {
			p.running[e.Package] = map[string]time.Time{}
		}
		if !strings.Contains(e.Test, "/") {
			p.running[e.Package][e.Test] = time.Now()
		}
	case "output":
		if len(p.out[key]) < maxOutput {
			p.out[key] = append(p.out[key], e.Output)
		}
	case "pass", "fail", "skip":
		if e.Test == "" {
			delete(p.running, e.Package)
			status := map[string]string{"pass": "ok  ", "fail": "FAIL", "skip": "skip"}[e.Action]
			fmt.Printf("%s %s (%.1fs)  [%s]\n", status, e.Package, e.Elapsed, p.clock())
			if e.Action == "fail" {
				p.failed = append(p.failed, e.Package)
				if len(p.out[key]) > 0 {
					fmt.Print(indent(p.out[key]))
					p.addWhy(e.Package, p.out[key], true)
				}
			}
			return
		}
		if !strings.Contains(e.Test, "/") {
			delete(p.running[e.Package], e.Test)
		}
		switch {
		case e.Action == "fail":
			p.failed = append(p.failed, e.Package+"."+e.Test)
			fmt.Printf("--- FAIL %s %s (%.1fs)\n%s", e.Package, e.Test, e.Elapsed, indent(p.out[key]))
			p.addWhy(e.Package+"."+e.Test, p.out[key], false)
		case e.Action == "pass" && !strings.Contains(e.Test, "/"):
			p.pass++
			if time.Duration(e.Elapsed*float64(time.Second)) >= p.slow {
				fmt.Printf("     %s %s passed (%.1fs)\n", e.Package, e.Test, e.Elapsed)
			}
		}
		delete(p.out, key)
	}
}

func (p *printer) heartbeat() {
	p.mu.Lock()
	defer p.mu.Unlock()
	var parts []string
	for pkg, tests := range p.running {
		var names []string
		for t, at := range tests {
			names = append(names, fmt.Sprintf("%s %s", t, time.Since(at).Round(time.Second)))
		}
		sort.Strings(names)
		s := pkg
		if len(names) > 0 {
			s += " (" + strings.Join(names, ", ") + ")"
		}
		parts = append(parts, s)
	}
	sort.Strings(parts)
	if len(parts) > 0 {
		fmt.Printf("     ... [%s] still running: %s\n", p.clock(), strings.Join(parts, "; "))
	}
}

func (p *printer) clock() string { return time.Since(p.start).Round(time.Second).String() }

func (p *printer) summary() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.failed) > 0 {
		for _, w := range p.why {
			fmt.Print(w)
		}
		fmt.Printf("FAILED after %s: %s\n", p.clock(), strings.Join(p.failed, ", "))
		return 1
	}
	if len(p.running) > 0 {
		fmt.Printf("the test run ended without a result for: %v\n", keys(p.running))
		return 1
	}
	fmt.Printf("all tests passed (%d top-level tests) in %s\n", p.pass, p.clock())
	return 0
}

// whyLines is how many lines of a failed test's output the summary repeats.
const whyLines = 6

// addWhy keeps, for the summary, the lines of a failed test's output that
// say why it failed: the last lines the test logged (t.Error, t.Fatal and
// its own t.Log lines, "name_test.go:N: ..." each) before the logs it
// dumps once failed (lines starting "---- ", and "event ..." lines). A
// panic (or a Go runtime's fatal error) says more than they do: its first
// lines are kept instead, not the stack frames that end it. For a package
// (pkg true: a timeout, a build failure), its panic, or else the last lines
// of its output. Each line is cut to 300 bytes. A test whose output has
// none of these (a parent of failed subtests) adds nothing.
func (p *printer) addWhy(name string, out []string, pkg bool) {
	var lines []string
	for i, l := range out {
		m := strings.TrimLeft(l, " ")
		if strings.HasPrefix(m, "panic: ") || strings.HasPrefix(m, "fatal error: ") {
			lines = nil
			for _, l := range out[i:] {
				if l = strings.TrimLeft(l, " "); strings.TrimSpace(l) != "" && len(lines) < whyLines {
					lines = append(lines, l)
				}
			}
			break
		}
		if pkg {
			if strings.TrimSpace(m) != "" && !strings.HasPrefix(m, "FAIL") {
				lines = append(lines, m)
			}
			continue
		}
		_, msg, ok := testLine(m)
		if !ok {
			continue
		}
		if strings.HasPrefix(msg, "---- ") || strings.HasPrefix(msg, "event ") {
			break
		}
		lines = append(lines, m)
	}
	if len(lines) == 0 {
		return
	}
	if len(lines) > whyLines {
		lines = lines[len(lines)-whyLines:]
	}
	var b strings.Builder
	fmt.Fprintf(&b, "why %s:\n", name)
	for _, l := range lines {
		l = strings.TrimRight(l, "\n")
		if len(l) > 300 {
			n := 300
			for n > 0 && !utf8.RuneStart(l[n]) {
				n-- // not inside a character
			}
			l = l[:n] + " ..."
		}
		b.WriteString("    " + l + "\n")
	}
	p.why = append(p.why, b.String())
}

// testLine splits a line a test logged, "file_test.go:12: message", into
// its place and message.
func testLine(l string) (place, msg string, ok bool) {
	place, msg, ok = strings.Cut(l, ": ")
	if !ok {
		return "", "", false
	}
	file, line, ok := strings.Cut(place, ":")
	if !ok || !strings.HasSuffix(file, ".go") || strings.ContainsAny(file, " \t") || line == "" || strings.Trim(line, "0123456789") != "" {
		return "", "", false
	}
	return place, msg, true
}

func keys(m map[string]map[string]time.Time) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func indent(lines []string) string {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString("    " + l)
	}
	return b.String()
}
