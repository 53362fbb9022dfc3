package prio

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// niceOf reads a task's nice value from /proc (field 19 of stat).
func niceOf(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	n, err := strconv.Atoi(f[16])
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestSetEveryThread runs in a child process (the nice value of the test
// process itself is left alone): every thread gets the value, and so does
// a child the process starts.
func TestSetEveryThread(t *testing.T) {
	if os.Getenv("PRIO_CHILD") == "1" {
		if err := Set(5); err != nil {
			t.Fatal(err)
		}
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			t.Fatal(err)
		}
		for _, task := range tasks {
			if n := niceOf(t, "/proc/self/task/"+task.Name()+"/stat"); n != 5 {
				t.Fatalf("thread %s: nice %d, want 5", task.Name(), n)
			}
		}
		if c := Current(); c != 5 {
			t.Fatalf("Current() = %d, want 5", c)
		}
		out, err := exec.Command("sh", "-c", "cut -d' ' -f19 /proc/self/stat").Output()
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(string(out)) != "5" {
			t.Fatalf("a child runs at nice %s, want 5", out)
		}
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^TestSetEveryThread$", "-test.count=1")
	cmd.Env = append(os.Environ(), "PRIO_CHILD=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}

func TestSetRange(t *testing.T) {
	for _, n := range []int{-21, 20} {
		if err := Set(n); err == nil {
			t.Errorf("Set(%d) accepted", n)
		}
	}
}
