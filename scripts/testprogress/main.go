// Command testprogress reads `go test -json` on stdin and prints progress
// for people: each package's result as it finishes, each slow test, a
// line every minute naming what still runs, and the output of every
// failed test. The raw JSON goes to the file named by -log. It exits 1 if
// any test or package failed (or the stream ended without a result).
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
}

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
		if len(p.out[key]) < 400 {
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
