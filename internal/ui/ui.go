// Package ui owns Haven's management web UI: static HTML, CSS and plain
// JavaScript modules embedded in the binary and served at / by every agent.
// The pages talk only to the REST API of the agent that served them, with a
// cookie session opened by POST /api/v1/login (see internal/api/session.go),
// and follow the cluster live through GET /api/v1/events/stream. There is no
// build step: the files under static/ are what the browser runs.
package ui

import (
	"context"
	"embed"
	"io/fs"
	"net/http"
	"path"
	"strings"

	"github.com/haven-ha/haven/internal/agent"
	"github.com/haven-ha/haven/internal/api"
)

//go:embed static
var staticFS embed.FS

// Files is the UI's file tree (index.html, app.js, ...).
func Files() fs.FS {
	sub, err := fs.Sub(staticFS, "static")
	if err != nil {
		panic(err) // the embedded tree always has static/
	}
	return sub
}

// New returns the web UI plugin for an agent (agent.WithPlugins).
func New() agent.Plugin {
	return agent.Plugin{Name: "ui", Setup: setup}
}

func setup(_ context.Context, a *agent.Agent) error {
	Register(a.API())
	return nil
}

// Register serves the UI on s: the page at / and its files under /ui/,
// and the login, logout, whoami and user endpoints it needs.
func Register(s *api.Server) {
	s.RegisterSessions()
	h := Handler()
	s.Handle("GET", "/{$}", api.RolePublic, h)
	s.Handle("GET", "/ui/", api.RolePublic, h)
}

// contentSecurityPolicy allows only this origin's own scripts, styles and
// connections: no inline script, no third party, no framing.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; font-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

// Handler serves index.html at / and the files of Files under /ui/.
func Handler() http.Handler {
	files := http.FileServerFS(Files())
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		// The files change with the binary; revalidate every time (cheap:
		// they are small and served from memory).
		h.Set("Cache-Control", "no-cache")
		p := r.URL.Path
		if p == "/" {
			r2 := r.Clone(r.Context())
			r2.URL.Path = "/"
			files.ServeHTTP(w, r2)
			return
		}
		rest, ok := strings.CutPrefix(p, "/ui/")
		if !ok || rest == "" || strings.HasSuffix(rest, "/") || path.Clean("/"+rest) != "/"+rest {
			api.WriteError(w, api.Errorf(http.StatusNotFound, "", "no such page: %s", p))
			return
		}
		if _, err := fs.Stat(Files(), rest); err != nil {
			api.WriteError(w, api.Errorf(http.StatusNotFound, "", "no such file: %s", p))
			return
		}
		r2 := r.Clone(r.Context())
		r2.URL.Path = "/" + rest
		files.ServeHTTP(w, r2)
	})
}
