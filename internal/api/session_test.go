package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/api/apitest"
	"github.com/haven-ha/haven/internal/pki"
)

// browser is a cookie-keeping HTTPS client, as a browser would be.
type browser struct {
	t    *testing.T
	base string
	hc   *http.Client
	csrf string
}

func newBrowser(t *testing.T, ag *apitest.Agent) *browser {
	t.Helper()
	caPEM, err := os.ReadFile(ag.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := pki.ClientTLS(caPEM, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg}}
	t.Cleanup(hc.CloseIdleConnections)
	return &browser{t: t, base: ag.URL(), hc: hc}
}

type answer struct {
	code int
	hdr  http.Header
	body []byte
}

func (a answer) err() api.Error {
	var e api.Error
	_ = json.Unmarshal(a.body, &e)
	return e
}

// do sends a request; hdr adds headers ("X-CSRF-Token": "auto" sends the
// browser's CSRF token).
func (b *browser) do(method, path string, body any, hdr map[string]string) answer {
	b.t.Helper()
	var rd io.Reader
	if body != nil {
		if s, ok := body.(string); ok {
			rd = strings.NewReader(s)
		} else {
			j, _ := json.Marshal(body)
			rd = bytes.NewReader(j)
		}
	}
	req, err := http.NewRequest(method, b.base+path, rd)
	if err != nil {
		b.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		if k == api.CSRFHeader && v == "auto" {
			v = b.csrf
		}
		req.Header.Set(k, v)
	}
	resp, err := b.hc.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return answer{code: resp.StatusCode, hdr: resp.Header, body: data}
}

func (b *browser) login(req api.LoginRequest) (answer, api.Whoami) {
	b.t.Helper()
	a := b.do("POST", "/api/v1/login", req, nil)
	var w api.Whoami
	if a.code == http.StatusOK {
		if err := json.Unmarshal(a.body, &w); err != nil {
			b.t.Fatalf("decode login answer: %v", err)
		}
		b.csrf = w.CSRF
	}
	return a, w
}

var csrf = map[string]string{api.CSRFHeader: "auto"}

func startAgent(t *testing.T) *apitest.Agent {
	t.Helper()
	ag, err := apitest.Start("n1", "")
	if err != nil {
		t.Fatalf("start agent: %v", err)
	}
	t.Cleanup(ag.Stop)
	if err := testPools(t.Context(), ag); err != nil {
		t.Fatal(err)
	}
	// The web UI plugin registers these in the daemon; this test does not
	// link it.
	ag.A.API().RegisterSessions()
	return ag
}

func addUser(t *testing.T, ag *apitest.Agent, name string, role api.Role, pw string) {
	t.Helper()
	ctx := context.Background()
	if err := ag.Clients["admin"].Do(ctx, "POST", "/api/v1/users", api.UserRequest{Name: name, Role: role, Password: pw}, nil); err != nil {
		t.Fatalf("create user %s: %v", name, err)
	}
}

func TestSessionLoginCSRFLogout(t *testing.T) {
	ag := startAgent(t)
	addUser(t, ag, "olga", api.RoleOperator, "correct horse")
	b := newBrowser(t, ag)

	// Not logged in.
	if a := b.do("GET", "/api/v1/whoami", nil, nil); a.code != http.StatusUnauthorized {
		t.Fatalf("whoami before login: %d %s", a.code, a.body)
	}
	a, me := b.login(api.LoginRequest{User: "olga", Password: "correct horse"})
	if a.code != http.StatusOK {
		t.Fatalf("login: %d %s", a.code, a.body)
	}
	if me.Role != api.RoleOperator || me.User != "olga" || me.CSRF == "" || me.Via != "session" {
		t.Fatalf("login answer: %+v", me)
	}
	sc := a.hdr.Get("Set-Cookie")
	for _, want := range []string{api.SessionCookie + "=", "Path=/", "HttpOnly", "Secure", "SameSite=Strict"} {
		if !strings.Contains(sc, want) {
			t.Errorf("session cookie %q lacks %q", sc, want)
		}
	}
	var who api.Whoami
	if a := b.do("GET", "/api/v1/whoami", nil, nil); a.code != http.StatusOK {
		t.Fatalf("whoami: %d %s", a.code, a.body)
	} else if err := json.Unmarshal(a.body, &who); err != nil || who.Role != api.RoleOperator || who.CSRF != me.CSRF {
		t.Fatalf("whoami: %s (%v)", a.body, err)
	}
	if a := b.do("GET", "/api/v1/status", nil, nil); a.code != http.StatusOK {
		t.Fatalf("status with the session: %d %s", a.code, a.body)
	}

	guest := map[string]any{"name": "g1", "memory": "128MiB", "state": "stopped",
		"disks": []map[string]any{{"path": "/guest_roots/g1.qcow2", "format": "qcow2"}}}
	tests := []struct {
		name string
		hdr  map[string]string
		want int
	}{
		{"no CSRF header", nil, http.StatusForbidden},
		{"wrong CSRF token", map[string]string{api.CSRFHeader: "nope"}, http.StatusForbidden},
		{"foreign origin", map[string]string{api.CSRFHeader: "auto", "Origin": "https://evil.example"}, http.StatusForbidden},
		{"CSRF token", map[string]string{api.CSRFHeader: "auto"}, http.StatusCreated},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := b.do("POST", "/api/v1/guests", guest, tc.hdr)
			if a.code != tc.want {
				t.Fatalf("create guest: got %d %s, want %d", a.code, a.body, tc.want)
			}
		})
	}
	// The role applies: an operator may not create domains.
	if a := b.do("POST", "/api/v1/domains", map[string]any{"name": "d1", "members": []map[string]any{{"node": "n1"}}}, csrf); a.code != http.StatusForbidden {
		t.Fatalf("operator creating a domain: %d %s", a.code, a.body)
	}

	// Logout needs the CSRF token too, then the session is gone.
	if a := b.do("POST", "/api/v1/logout", map[string]any{}, nil); a.code != http.StatusForbidden {
		t.Fatalf("logout without CSRF: %d %s", a.code, a.body)
	}
	if a := b.do("POST", "/api/v1/logout", map[string]any{}, csrf); a.code != http.StatusNoContent {
		t.Fatalf("logout: %d %s", a.code, a.body)
	} else if sc := a.hdr.Get("Set-Cookie"); !strings.Contains(sc, "Max-Age=0") {
		t.Errorf("logout does not clear the cookie: %q", sc)
	}
	if a := b.do("GET", "/api/v1/whoami", nil, nil); a.code != http.StatusUnauthorized {
		t.Fatalf("whoami after logout: %d %s", a.code, a.body)
	}
}

func TestSessionLoginFailures(t *testing.T) {
	ag := startAgent(t)
	addUser(t, ag, "olga", api.RoleOperator, "correct horse")
	b := newBrowser(t, ag)
	tests := []struct {
		name  string
		req   api.LoginRequest
		want  int
		field string
	}{
		{"wrong password", api.LoginRequest{User: "olga", Password: "wrong horse"}, http.StatusUnauthorized, "password"},
		{"unknown user", api.LoginRequest{User: "nobody", Password: "correct horse"}, http.StatusUnauthorized, "password"},
		{"nothing", api.LoginRequest{}, http.StatusBadRequest, "user"},
		{"bad token", api.LoginRequest{Token: pki.NewAPIToken().String()}, http.StatusUnauthorized, "token"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, _ := b.login(tc.req)
			if a.code != tc.want || a.err().Field != tc.field {
				t.Fatalf("got %d %s, want %d field %q", a.code, a.body, tc.want, tc.field)
			}
			if a.hdr.Get("Set-Cookie") != "" {
				t.Errorf("a failed login set a cookie")
			}
		})
	}
	// A login must be JSON (a cross-site form cannot send that).
	if a := b.do("POST", "/api/v1/login", `{"user":"olga","password":"correct horse"}`, map[string]string{"Content-Type": "text/plain"}); a.code != http.StatusUnsupportedMediaType {
		t.Fatalf("text/plain login: %d %s", a.code, a.body)
	}
	// A join token cannot log in; an API token can, with its role.
	ctx := context.Background()
	jt, err := ag.Clients["admin"].CreateToken(ctx, api.TokenRequest{Role: "join"})
	if err != nil {
		t.Fatal(err)
	}
	if a, _ := b.login(api.LoginRequest{Token: jt.Token}); a.code != http.StatusUnauthorized {
		t.Fatalf("join token login: %d %s", a.code, a.body)
	}
	if a, me := b.login(api.LoginRequest{Token: ag.Tokens["viewer"]}); a.code != http.StatusOK || me.Role != api.RoleViewer {
		t.Fatalf("viewer token login: %d %s", a.code, a.body)
	}
	if a := b.do("POST", "/api/v1/guests", map[string]any{"name": "g2"}, csrf); a.code != http.StatusForbidden {
		t.Fatalf("viewer session creating a guest: %d %s", a.code, a.body)
	}
}

func TestSessionFollowsUser(t *testing.T) {
	ag := startAgent(t)
	addUser(t, ag, "olga", api.RoleOperator, "correct horse")
	b := newBrowser(t, ag)
	if a, _ := b.login(api.LoginRequest{User: "olga", Password: "correct horse"}); a.code != http.StatusOK {
		t.Fatalf("login: %d %s", a.code, a.body)
	}
	ctx := context.Background()
	admin := ag.Clients["admin"]
	if err := admin.Do(ctx, "PUT", "/api/v1/users/olga", api.UserRequest{Role: api.RoleViewer}, nil); err != nil {
		t.Fatal(err)
	}
	var who api.Whoami
	a := b.do("GET", "/api/v1/whoami", nil, nil)
	if err := json.Unmarshal(a.body, &who); err != nil || who.Role != api.RoleViewer {
		t.Fatalf("whoami after the role change: %d %s", a.code, a.body)
	}
	if err := admin.Do(ctx, "DELETE", "/api/v1/users/olga", nil, nil); err != nil {
		t.Fatal(err)
	}
	if a := b.do("GET", "/api/v1/status", nil, nil); a.code != http.StatusUnauthorized {
		t.Fatalf("status after the user was deleted: %d %s", a.code, a.body)
	}
	var users []api.UserInfo
	if err := admin.Do(ctx, "GET", "/api/v1/users", nil, &users); err != nil || len(users) != 0 {
		t.Fatalf("users: %v %v", users, err)
	}
}

func TestUserRequestsChecked(t *testing.T) {
	ag := startAgent(t)
	ctx := context.Background()
	admin := ag.Clients["admin"]
	tests := []struct {
		name  string
		req   api.UserRequest
		field string
	}{
		{"bad name", api.UserRequest{Name: "a b", Role: api.RoleViewer, Password: "long enough"}, "name"},
		{"bad role", api.UserRequest{Name: "ann", Role: "join", Password: "long enough"}, "role"},
		{"short password", api.UserRequest{Name: "ann", Role: api.RoleViewer, Password: "short"}, "password"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := admin.Do(ctx, "POST", "/api/v1/users", tc.req, nil)
			var e *api.Error
			if !asAPIError(err, &e) || e.Status != http.StatusBadRequest || e.Field != tc.field {
				t.Fatalf("got %v, want 400 on field %s", err, tc.field)
			}
		})
	}
	addUser(t, ag, "ann", api.RoleViewer, "long enough")
	err := admin.Do(ctx, "POST", "/api/v1/users", api.UserRequest{Name: "ann", Role: api.RoleViewer, Password: "long enough"}, nil)
	var e *api.Error
	if !asAPIError(err, &e) || e.Status != http.StatusConflict {
		t.Fatalf("duplicate user: %v", err)
	}
	// Operators cannot manage users.
	err = ag.Clients["operator"].Do(ctx, "GET", "/api/v1/users", nil, nil)
	if !asAPIError(err, &e) || e.Status != http.StatusForbidden {
		t.Fatalf("operator listing users: %v", err)
	}
}

func TestLoginThrottled(t *testing.T) {
	ag := startAgent(t)
	addUser(t, ag, "olga", api.RoleOperator, "correct horse")
	b := newBrowser(t, ag)
	var last answer
	for range 7 {
		last, _ = b.login(api.LoginRequest{User: "olga", Password: "guess"})
		if last.code == http.StatusTooManyRequests {
			break
		}
	}
	if last.code != http.StatusTooManyRequests || last.hdr.Get("Retry-After") == "" {
		t.Fatalf("after repeated failures: %d %s", last.code, last.body)
	}
	// Even the right password waits now.
	if a, _ := b.login(api.LoginRequest{User: "olga", Password: "correct horse"}); a.code != http.StatusTooManyRequests {
		t.Fatalf("right password while throttled: %d %s", a.code, a.body)
	}
}

func TestPasswordHash(t *testing.T) {
	h := api.HashPassword("s3cret pass")
	h2 := api.HashPassword("s3cret pass")
	if h == h2 {
		t.Fatal("two hashes of one password are equal: no salt")
	}
	tests := []struct {
		pw, hash string
		want     bool
	}{
		{"s3cret pass", h, true},
		{"s3cret pass", h2, true},
		{"s3cret pasS", h, false},
		{"", h, false},
		{"s3cret pass", "", false},
		{"s3cret pass", "$argon2id$v=19$m=0,t=2,p=1$AAAA$AAAA", false},
		{"s3cret pass", strings.Replace(h, "$argon2id$", "$argon2i$", 1), false},
	}
	for _, tc := range tests {
		if got := api.CheckPassword(tc.pw, tc.hash); got != tc.want {
			t.Errorf("CheckPassword(%q, %q) = %v, want %v", tc.pw, tc.hash, got, tc.want)
		}
	}
}

func FuzzCheckPassword(f *testing.F) {
	f.Add("pw", api.HashPassword("pw"))
	f.Add("x", "$argon2id$v=19$m=8,t=1,p=1$c2FsdA$aGFzaA")
	f.Fuzz(func(t *testing.T, pw, hash string) {
		if len(hash) > 200 {
			return
		}
		_ = api.CheckPassword(pw, hash) // must not panic or hang
	})
}

func asAPIError(err error, e **api.Error) bool { return errors.As(err, e) }
