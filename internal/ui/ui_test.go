package ui_test

import (
	"io"
	"io/fs"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/haven-ha/haven/internal/ui"
)

func TestHandler(t *testing.T) {
	h := ui.Handler()
	tests := []struct {
		path  string
		code  int
		ctype string
		body  string
	}{
		{"/", 200, "text/html", `<script type="module" src="/ui/app.js">`},
		{"/ui/app.js", 200, "javascript", "EventSource"},
		{"/ui/views/overview.js", 200, "javascript", "export function overview"},
		{"/ui/style.css", 200, "text/css", ".chip"},
		{"/ui/favicon.svg", 200, "image/svg+xml", "<svg"},
		{"/ui/", 404, "application/json", "no such page"},
		{"/ui/views/", 404, "application/json", "no such page"},
		{"/ui/nope.js", 404, "application/json", "no such file"},
		{"/ui/../ui.go", 404, "application/json", ""},
		{"/ui/%2e%2e/ui.go", 404, "application/json", ""},
		{"/other", 404, "application/json", ""},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest("GET", tc.path, nil)
			h.ServeHTTP(rec, req)
			body, _ := io.ReadAll(rec.Body)
			if rec.Code != tc.code || !strings.Contains(rec.Header().Get("Content-Type"), tc.ctype) || !strings.Contains(string(body), tc.body) {
				t.Fatalf("GET %s: %d %q %.200s; want %d %q with %q", tc.path, rec.Code, rec.Header().Get("Content-Type"), body, tc.code, tc.ctype, tc.body)
			}
			if tc.code == 200 {
				for _, hdr := range []string{"Content-Security-Policy", "X-Content-Type-Options", "X-Frame-Options"} {
					if rec.Header().Get(hdr) == "" {
						t.Errorf("GET %s: no %s header", tc.path, hdr)
					}
				}
			}
		})
	}
}

// TestFilesResolve checks that every module import and every /ui/ URL in
// the UI's files names a file that exists, and that no page pulls anything
// from another origin.
func TestFilesResolve(t *testing.T) {
	files := ui.Files()
	importRE := regexp.MustCompile(`(?m)^\s*import\s+(?:[^'"]*\s+from\s+)?['"]([^'"]+)['"]`)
	urlRE := regexp.MustCompile(`["'(]/ui/([A-Za-z0-9_./-]+)`)
	originRE := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}[^\s'"` + "`" + `)]*`)
	n := 0
	err := fs.WalkDir(files, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(files, p)
		if err != nil {
			return err
		}
		text := string(b)
		check := text
		if strings.HasPrefix(p, "vendor/") {
			// Vendored libraries: their licence and comments name their
			// authors' sites; nothing there is fetched.
			switch {
			case strings.HasSuffix(p, "/LICENSE") || strings.HasSuffix(p, "/VERSION"):
				check = ""
			case strings.HasSuffix(p, ".css"):
				check = regexp.MustCompile(`(?s)/\*.*?\*/`).ReplaceAllString(text, "")
			}
		}
		for _, m := range originRE.FindAllString(check, -1) {
			if !strings.HasPrefix(m, "http://www.w3.org/") { // SVG's namespace
				t.Errorf("%s refers to another origin: %s", p, m)
			}
		}
		dir := p[:strings.LastIndex(p, "/")+1]
		for _, m := range importRE.FindAllStringSubmatch(text, -1) {
			target := m[1]
			if !strings.HasPrefix(target, "./") && !strings.HasPrefix(target, "../") {
				t.Errorf("%s imports %q: only relative imports of the UI's own files work", p, target)
				continue
			}
			resolved := cleanJoin(dir, target)
			if _, err := fs.Stat(files, resolved); err != nil {
				t.Errorf("%s imports %q: %s does not exist", p, target, resolved)
			}
			n++
		}
		for _, m := range urlRE.FindAllStringSubmatch(text, -1) {
			if _, err := fs.Stat(files, m[1]); err != nil {
				t.Errorf("%s refers to /ui/%s, which does not exist", p, m[1])
			}
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 10 {
		t.Fatalf("found only %d references: is the check working?", n)
	}
}

func cleanJoin(dir, rel string) string {
	parts := strings.Split(strings.TrimSuffix(dir, "/"), "/")
	if dir == "" {
		parts = nil
	}
	for _, seg := range strings.Split(rel, "/") {
		switch seg {
		case ".":
		case "..":
			if len(parts) > 0 {
				parts = parts[:len(parts)-1]
			}
		default:
			parts = append(parts, seg)
		}
	}
	return strings.Join(parts, "/")
}
