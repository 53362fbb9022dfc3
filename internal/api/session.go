package api

// People's login for the web UI: user accounts with roles kept in the store
// under /haven/users/ (passwords hashed with argon2id), cookie sessions kept
// under /haven/sessions/ (only the SHA-256 of the session id is stored, with a
// lease that ends it), and CSRF protection: a request authenticated by a
// session cookie with an unsafe method must carry the session's CSRF token in
// the X-CSRF-Token header. Bearer tokens work as before and need no CSRF
// token. An API token of role viewer or above may also log in (the UI then
// acts with the token's role).
//
// The server's auth path calls authenticateRequest; the endpoints are added
// by RegisterSessions.

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/crypto/argon2"

	"github.com/haven-ha/haven/internal/store"
)

// Session settings.
const (
	// PrefixUsers holds one UserRecord per person.
	PrefixUsers = store.PrefixUsers
	// PrefixSessions holds one session record per login, keyed by the
	// SHA-256 of the session id, under a lease of the session's lifetime.
	PrefixSessions = store.PrefixSessions
	// SessionCookie is the session cookie's name. The __Host- prefix makes
	// browsers insist on Secure, Path=/ and no Domain.
	SessionCookie = "__Host-haven_session"
	// CSRFHeader carries the session's CSRF token on unsafe methods.
	CSRFHeader = "X-CSRF-Token"
	// SessionTTL is how long a login lasts.
	SessionTTL = 12 * time.Hour
	// MinPasswordLen is the shortest password accepted.
	MinPasswordLen = 8
)

// KeyUser is the record of a user.
func KeyUser(name string) string { return PrefixUsers + name }

// UserRecord is a stored user. Only the password's argon2id hash is kept.
type UserRecord struct {
	Name string `json:"name"`
	Role Role   `json:"role"`
	Hash string `json:"hash"`
	// Gen changes with the password, and a new user of an old name gets
	// a new one: sessions opened under another generation are over.
	Gen     string    `json:"gen,omitempty"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
}

// UserInfo lists a user without the hash.
type UserInfo struct {
	Name    string    `json:"name"`
	Role    Role      `json:"role"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
}

// UserRequest is the body of POST /api/v1/users (all fields) and PUT
// /api/v1/users/{name} (role and/or password; name ignored).
type UserRequest struct {
	Name     string `json:"name,omitempty"`
	Role     Role   `json:"role,omitempty"`
	Password string `json:"password,omitempty"`
}

// LoginRequest is the body of POST /api/v1/login: a user and password, or
// an API token.
type LoginRequest struct {
	User     string `json:"user,omitempty"`
	Password string `json:"password,omitempty"`
	Token    string `json:"token,omitempty"`
}

// Whoami is the answer of GET /api/v1/whoami and POST /api/v1/login.
type Whoami struct {
	User string `json:"user"` // user name, or the token's name or ID
	Role Role   `json:"role"`
	// Via is "session" for a cookie session, "token" for a bearer token.
	Via string `json:"via"`
	// CSRF is the token to send in the X-CSRF-Token header on unsafe
	// methods (cookie sessions only).
	CSRF    string    `json:"csrf,omitempty"`
	Expires time.Time `json:"expires,omitzero"`
	Node    string    `json:"node"` // the agent that answered
}

// sessionRecord is a stored session.
type sessionRecord struct {
	User    string    `json:"user,omitempty"`  // a user session
	UserGen string    `json:"gen,omitempty"`   // the user's generation at login
	TokenID string    `json:"token,omitempty"` // a session opened with an API token
	CSRF    string    `json:"csrf"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
}

var userNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`)

// ValidUserName reports whether s may name a user.
func ValidUserName(s string) bool { return userNameRE.MatchString(s) }

// Password hashing: argon2id with RFC 9106's second recommended option
// scaled down to the OWASP minimum (19 MiB, 2 passes), which keeps a login
// near 50 ms on a small host. The parameters travel with each hash.
const (
	argonTime    = 2
	argonMemory  = 19 * 1024 // KiB
	argonThreads = 1
	argonKeyLen  = 32
)

// HashPassword returns the encoded argon2id hash of pw with a fresh salt.
func HashPassword(pw string) string {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		panic(err)
	}
	key := argon2.IDKey([]byte(pw), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads, b64.EncodeToString(salt), b64.EncodeToString(key))
}

// CheckPassword reports whether pw matches an encoded hash from
// HashPassword.
func CheckPassword(pw, encoded string) bool {
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[1] != "argon2id" || parts[2] != fmt.Sprintf("v=%d", argon2.Version) {
		return false
	}
	var m, t uint32
	var p uint8
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil || m < 8 || m > 64*1024 || t == 0 || t > 8 || p == 0 || p > 8 {
		return false
	}
	b64 := base64.RawStdEncoding
	salt, err1 := b64.DecodeString(parts[4])
	want, err2 := b64.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(want) == 0 {
		return false
	}
	got := argon2.IDKey([]byte(pw), salt, t, m, p, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1
}

// dummyHash is checked against when a user does not exist, so that a
// login takes as long for unknown users as for known ones.
var dummyHash = sync.OnceValue(func() string { return HashPassword("not a real password") })

// loginGate bounds concurrent password checks (each takes 19 MiB) and
// slows down guessing. Failures are counted per (user name, source address)
// and per source address, so that a guesser elsewhere does not lock the real
// user out; after loginFreeFailures failures on a key, each further attempt
// waits out a growing delay. An attempt is counted when it starts (begin),
// under the lock, and forgiven when it succeeds: parallel guesses cannot all
// pass the check before any is recorded. The table is bounded (loginTableMax
// keys; the stalest entry makes room).
type loginGate struct {
	sem chan struct{}

	mu       sync.Mutex // guards failures
	failures map[string]*loginFailures
}

type loginFailures struct {
	n    int
	last time.Time
}

const (
	loginFreeFailures = 5
	// loginFreeFailuresAddr is the free failures of one address over all
	// user names (a user who forgot which name is theirs tries a few).
	loginFreeFailuresAddr = 20
	loginMaxDelay         = time.Minute
	loginForget           = 15 * time.Minute
	loginTableMax         = 10000
)

func (s *Server) loginGate() *loginGate {
	s.gateOnce.Do(func() {
		s.gate = &loginGate{sem: make(chan struct{}, 2), failures: map[string]*loginFailures{}}
	})
	return s.gate
}

// sourceKey is the throttled source of a request: its IP address (an IPv6
// address by its /64, which one client usually holds whole).
func sourceKey(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return "?"
	}
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}

func delayFor(f *loginFailures, free int, now time.Time) time.Duration {
	if f == nil || f.n < free {
		return 0
	}
	delay := min(time.Second<<min(f.n-free, 6), loginMaxDelay)
	if d := f.last.Add(delay).Sub(now); d > 0 {
		return d
	}
	return 0
}

// begin checks whether user may try from addr now and, if so, counts the
// attempt as a failure until done forgives it. It returns how long to wait
// when the attempt is refused.
func (g *loginGate) begin(user, addr string, now time.Time) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	uk, ak := "u\x00"+user+"\x00"+addr, "a\x00"+addr
	if d := max(delayFor(g.failures[uk], loginFreeFailures, now), delayFor(g.failures[ak], loginFreeFailuresAddr, now)); d > 0 {
		return d
	}
	for _, k := range []string{uk, ak} {
		f := g.failures[k]
		if f == nil {
			g.makeRoom(now)
			f = &loginFailures{}
			g.failures[k] = f
		}
		f.n++
		f.last = now
	}
	return 0
}

// done forgives a successful attempt (the user's and the address's count).
func (g *loginGate) done(user, addr string, ok bool) {
	if !ok {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.failures, "u\x00"+user+"\x00"+addr)
	if f := g.failures["a\x00"+addr]; f != nil {
		f.n--
		if f.n <= 0 {
			delete(g.failures, "a\x00"+addr)
		}
	}
}

// makeRoom keeps the table under loginTableMax: forgotten entries go, then
// the stalest. Called with g.mu held.
func (g *loginGate) makeRoom(now time.Time) {
	if len(g.failures) < loginTableMax {
		return
	}
	var oldest string
	var at time.Time
	for k, f := range g.failures {
		if now.Sub(f.last) > loginForget {
			delete(g.failures, k)
			continue
		}
		if oldest == "" || f.last.Before(at) {
			oldest, at = k, f.last
		}
	}
	if len(g.failures) >= loginTableMax {
		delete(g.failures, oldest)
	}
}

// maxPassword bounds the passwords a login hashes.
const maxPassword = 1024

// RegisterSessions adds the login, logout, whoami and user endpoints; a
// second call on the same server does nothing.
func (s *Server) RegisterSessions() {
	s.sessionsOnce.Do(s.registerSessions)
}

func (s *Server) registerSessions() {
	s.HandleFunc("POST", "/api/v1/login", RolePublic, s.handleLogin)
	s.HandleFunc("POST", "/api/v1/logout", RolePublic, s.handleLogout)
	s.HandleFunc("GET", "/api/v1/whoami", RolePublic, s.handleWhoami)
	s.HandleFunc("GET", "/api/v1/users", RoleAdmin, s.handleUserList)
	s.HandleFunc("POST", "/api/v1/users", RoleAdmin, s.handleUserCreate)
	s.HandleFunc("PUT", "/api/v1/users/{name}", RoleAdmin, s.handleUserUpdate)
	s.HandleFunc("DELETE", "/api/v1/users/{name}", RoleAdmin, s.handleUserDelete)
}

// authenticateRequest authenticates a request by its bearer token or, when
// it has none, by its session cookie; a cookie session's unsafe requests
// must carry the CSRF token and, when the browser sends an Origin, come
// from this server's own origin. Errors are *Error (401, 403 or 503).
func (s *Server) authenticateRequest(r *http.Request) (*store.TokenRecord, error) {
	rec, _, err := s.authenticateFull(r)
	return rec, err
}

func (s *Server) authenticateFull(r *http.Request) (*store.TokenRecord, *sessionRecord, error) {
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.StoreTimeout)
	defer cancel()
	if r.Header.Get("Authorization") != "" {
		rec, err := s.Authenticate(ctx, BearerToken(r))
		return rec, nil, err
	}
	c, err := r.Cookie(SessionCookie)
	if err != nil || c.Value == "" {
		rec, err := s.Authenticate(ctx, "")
		return rec, nil, err
	}
	rec, sess, err := s.sessionCaller(ctx, c.Value)
	if err != nil {
		return nil, nil, err
	}
	if !safeMethod(r.Method) {
		if err := checkCSRF(r, sess); err != nil {
			return nil, nil, err
		}
	}
	return rec, sess, nil
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

func checkCSRF(r *http.Request, sess *sessionRecord) error {
	got := r.Header.Get(CSRFHeader)
	if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(sess.CSRF)) != 1 {
		return Errorf(http.StatusForbidden, "", "missing or wrong %s header: a browser session must send its CSRF token (from /api/v1/whoami) on every change; reload the page", CSRFHeader)
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || u.Host != r.Host {
			return Errorf(http.StatusForbidden, "", "request from origin %q refused: only this server's own pages may use its session", o)
		}
	}
	return nil
}

func sessionKey(id string) string {
	sum := sha256.Sum256([]byte(id))
	return PrefixSessions + hex.EncodeToString(sum[:])
}

var errNoSession = Errorf(http.StatusUnauthorized, "", "not logged in, or the session ended: log in again")

// sessionCaller resolves a session id to the caller it acts as. The user's
// (or token's) current role applies, so a role change or a deleted user
// takes effect at once.
func (s *Server) sessionCaller(ctx context.Context, id string) (*store.TokenRecord, *sessionRecord, error) {
	cli := s.cfg.Store.Client()
	resp, err := cli.Get(ctx, sessionKey(id))
	if err != nil {
		return nil, nil, StoreUnavailable("check session", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil, errNoSession
	}
	var sess sessionRecord
	if err := store.Decode(string(resp.Kvs[0].Key), resp.Kvs[0].Value, &sess); err != nil {
		return nil, nil, errNoSession
	}
	if !s.now().Before(sess.Expires) {
		return nil, nil, errNoSession
	}
	switch {
	case sess.User != "":
		u, err := s.user(ctx, sess.User)
		if errors.Is(err, store.ErrNotFound) {
			return nil, nil, Errorf(http.StatusUnauthorized, "", "user %q no longer exists", sess.User)
		} else if err != nil {
			return nil, nil, StoreUnavailable("check session", err)
		}
		if subtle.ConstantTimeCompare([]byte(u.Gen), []byte(sess.UserGen)) != 1 {
			return nil, nil, Errorf(http.StatusUnauthorized, "", "user %q's password changed, or the user was deleted and made again, since this session began: log in again", sess.User)
		}
		return &store.TokenRecord{ID: "user:" + u.Name, Role: u.Role, Name: u.Name, Created: sess.Created, Expires: sess.Expires}, &sess, nil
	case sess.TokenID != "":
		t, err := s.cfg.Store.Token(ctx, sess.TokenID)
		if errors.Is(err, store.ErrNotFound) {
			return nil, nil, Errorf(http.StatusUnauthorized, "", "the token this session was opened with was revoked; log in again")
		} else if err != nil {
			return nil, nil, StoreUnavailable("check session", err)
		}
		if !t.Expires.IsZero() && !s.now().Before(t.Expires) {
			return nil, nil, Errorf(http.StatusUnauthorized, "", "token %s expired; log in again", t.ID)
		}
		t.Hash = ""
		return &t, &sess, nil
	}
	return nil, nil, errNoSession
}

func (s *Server) user(ctx context.Context, name string) (UserRecord, error) {
	var u UserRecord
	resp, err := s.cfg.Store.Client().Get(ctx, KeyUser(name))
	if err != nil {
		return u, fmt.Errorf("read user %q: %w", name, err)
	}
	if len(resp.Kvs) == 0 {
		return u, fmt.Errorf("user %q: %w", name, store.ErrNotFound)
	}
	if err := store.Decode(string(resp.Kvs[0].Key), resp.Kvs[0].Value, &u); err != nil {
		return u, fmt.Errorf("decode user %q: %w", name, err)
	}
	return u, nil
}

func randomID(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func requireJSON(r *http.Request) error {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return Errorf(http.StatusUnsupportedMediaType, "", "send the body as Content-Type: application/json")
	}
	return nil
}

func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	// A JSON content type cannot be sent cross-site without a CORS
	// preflight, which this server never grants: no login CSRF.
	if err := requireJSON(r); err != nil {
		WriteError(w, err)
		return
	}
	var req LoginRequest
	if err := DecodeJSON(w, r, &req); err != nil {
		WriteError(w, err)
		return
	}
	ctx := r.Context()
	sess := sessionRecord{CSRF: randomID(24), Created: s.now().UTC()}
	sess.Expires = sess.Created.Add(SessionTTL)
	out := Whoami{Via: "session", CSRF: sess.CSRF, Expires: sess.Expires, Node: s.cfg.Node}
	switch {
	case req.Token != "":
		rec, err := s.Authenticate(ctx, req.Token)
		if err != nil {
			WriteError(w, Errorf(http.StatusUnauthorized, "token", "%s", err.Error()))
			return
		}
		if rec.Role.Rank() < RoleViewer.Rank() {
			WriteError(w, Errorf(http.StatusUnauthorized, "token", "a %s token cannot log in; use an admin, operator or viewer token", displayRole(rec.Role)))
			return
		}
		sess.TokenID = rec.ID
		out.User, out.Role = rec.Name, rec.Role
		if out.User == "" {
			out.User = "token " + rec.ID
		}
		if !rec.Expires.IsZero() && rec.Expires.Before(sess.Expires) {
			sess.Expires, out.Expires = rec.Expires, rec.Expires
		}
	case req.User != "":
		// The name is checked first, by the rules of user creation: an
		// unbounded name never reaches the throttle's table or a log line.
		if !ValidUserName(req.User) || len(req.Password) > maxPassword {
			WriteError(w, Errorf(http.StatusUnauthorized, "password", "wrong user name or password"))
			return
		}
		g := s.loginGate()
		addr := sourceKey(r)
		if d := g.begin(req.User, addr, s.now()); d > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int(d.Seconds())+1))
			WriteError(w, Errorf(http.StatusTooManyRequests, "password", "too many failed logins for %q from %s; try again in %d s", req.User, addr, int(d.Seconds())+1))
			return
		}
		select {
		case g.sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		u, err := s.user(ctx, req.User)
		ok := false
		switch {
		case err == nil:
			ok = CheckPassword(req.Password, u.Hash)
		case errors.Is(err, store.ErrNotFound):
			CheckPassword(req.Password, dummyHash())
		default:
			<-g.sem
			WriteError(w, StoreUnavailable("check login", err))
			return
		}
		<-g.sem
		g.done(req.User, addr, ok)
		if !ok {
			s.log.Info("login failed", "op", "login", "user", req.User, "remote", r.RemoteAddr)
			WriteError(w, Errorf(http.StatusUnauthorized, "password", "wrong user name or password"))
			return
		}
		sess.User, sess.UserGen = u.Name, u.Gen
		out.User, out.Role = u.Name, u.Role
	default:
		WriteError(w, Errorf(http.StatusBadRequest, "user", "give a user name and password, or an API token"))
		return
	}
	id := randomID(32)
	if err := s.putSession(ctx, id, sess); err != nil {
		WriteError(w, err)
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: SessionCookie, Value: id, Path: "/",
		MaxAge:   int(sess.Expires.Sub(sess.Created).Seconds()),
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode,
	})
	s.log.Info("login", "op", "login", "user", out.User, "role", out.Role, "remote", r.RemoteAddr)
	WriteJSON(w, http.StatusOK, out)
}

func (s *Server) putSession(ctx context.Context, id string, sess sessionRecord) error {
	cli := s.cfg.Store.Client()
	ttl := int64(sess.Expires.Sub(sess.Created).Seconds()) + 1
	lease, err := cli.Grant(ctx, ttl)
	if err != nil {
		return Errorf(http.StatusServiceUnavailable, "", "open session: store unavailable: %v", err)
	}
	if _, err := cli.Put(ctx, sessionKey(id), store.MustEncode(sessionKey(id), sess), clientv3.WithLease(lease.ID)); err != nil {
		return Errorf(http.StatusServiceUnavailable, "", "open session: store unavailable: %v", err)
	}
	return nil
}

func clearCookie(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
}

func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request) {
	c, err := r.Cookie(SessionCookie)
	if err != nil || c.Value == "" {
		clearCookie(w)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	_, sess, err := s.sessionCaller(r.Context(), c.Value)
	if err != nil {
		// Already ended: nothing to protect.
		clearCookie(w)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if err := checkCSRF(r, sess); err != nil {
		WriteError(w, err)
		return
	}
	if _, err := s.cfg.Store.Client().Delete(r.Context(), sessionKey(c.Value)); err != nil {
		WriteError(w, Errorf(http.StatusServiceUnavailable, "", "end session: store unavailable: %v", err))
		return
	}
	clearCookie(w)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleWhoami(w http.ResponseWriter, r *http.Request) {
	rec, sess, err := s.authenticateFull(r)
	if err != nil {
		WriteError(w, err)
		return
	}
	out := Whoami{User: rec.Name, Role: rec.Role, Via: "token", Node: s.cfg.Node, Expires: rec.Expires}
	if out.User == "" {
		out.User = "token " + rec.ID
	}
	if sess != nil {
		out.Via, out.CSRF, out.Expires = "session", sess.CSRF, sess.Expires
	}
	WriteJSON(w, http.StatusOK, out)
}

func checkUserRequest(req UserRequest, create bool) error {
	if create && !ValidUserName(req.Name) {
		return Errorf(http.StatusBadRequest, "name", "%q is not a valid user name: use letters, digits, '.', '_', '@' or '-', at most 64", req.Name)
	}
	if (create || req.Role != "") && req.Role.Rank() == 0 {
		return Errorf(http.StatusBadRequest, "role", "unknown role %q; use admin, operator or viewer", req.Role)
	}
	if create || req.Password != "" {
		if len(req.Password) < MinPasswordLen {
			return Errorf(http.StatusBadRequest, "password", "password too short: use at least %d characters", MinPasswordLen)
		}
		if len(req.Password) > 1024 {
			return Errorf(http.StatusBadRequest, "password", "password longer than 1024 characters")
		}
	}
	return nil
}

func (s *Server) handleUserCreate(w http.ResponseWriter, r *http.Request) {
	var req UserRequest
	if err := DecodeJSON(w, r, &req); err != nil {
		WriteError(w, err)
		return
	}
	if err := checkUserRequest(req, true); err != nil {
		WriteError(w, err)
		return
	}
	now := s.now().UTC()
	u := UserRecord{Name: req.Name, Role: req.Role, Hash: HashPassword(req.Password), Gen: randomID(12), Created: now, Updated: now}
	key := KeyUser(u.Name)
	resp, err := s.cfg.Store.Client().Txn(r.Context()).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, store.MustEncode(key, u))).Commit()
	if err != nil {
		WriteError(w, fmt.Errorf("create user %q: %w", u.Name, err))
		return
	}
	if !resp.Succeeded {
		WriteError(w, Errorf(http.StatusConflict, "name", "user %q already exists; change it with PUT /api/v1/users/%s", u.Name, u.Name))
		return
	}
	s.log.Info("user created", "op", "user", "user", u.Name, "role", u.Role, "by", callerName(r))
	WriteJSON(w, http.StatusCreated, info(u))
}

func (s *Server) handleUserUpdate(w http.ResponseWriter, r *http.Request) {
	var req UserRequest
	if err := DecodeJSON(w, r, &req); err != nil {
		WriteError(w, err)
		return
	}
	if err := checkUserRequest(req, false); err != nil {
		WriteError(w, err)
		return
	}
	name := r.PathValue("name")
	ctx := r.Context()
	cli := s.cfg.Store.Client()
	key := KeyUser(name)
	resp, err := cli.Get(ctx, key)
	if err != nil {
		WriteError(w, fmt.Errorf("read user %q: %w", name, err))
		return
	}
	if len(resp.Kvs) == 0 {
		WriteError(w, Errorf(http.StatusNotFound, "name", "no user named %q", name))
		return
	}
	var u UserRecord
	if err := store.Decode(string(resp.Kvs[0].Key), resp.Kvs[0].Value, &u); err != nil {
		WriteError(w, fmt.Errorf("decode user %q: %w", name, err))
		return
	}
	if req.Role != "" {
		u.Role = req.Role
	}
	if req.Password != "" {
		u.Hash = HashPassword(req.Password)
		u.Gen = randomID(12) // ends every session of the old password
	}
	u.Updated = s.now().UTC()
	tr, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", resp.Kvs[0].ModRevision)).
		Then(clientv3.OpPut(key, store.MustEncode(key, u))).Commit()
	if err != nil {
		WriteError(w, fmt.Errorf("update user %q: %w", name, err))
		return
	}
	if !tr.Succeeded {
		WriteError(w, Errorf(http.StatusConflict, "", "user %q changed meanwhile; try again", name))
		return
	}
	s.log.Info("user updated", "op", "user", "user", name, "role", u.Role, "password", req.Password != "", "by", callerName(r))
	WriteJSON(w, http.StatusOK, info(u))
}

func (s *Server) handleUserList(w http.ResponseWriter, r *http.Request) {
	resp, err := s.cfg.Store.Client().Get(r.Context(), PrefixUsers, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		WriteError(w, fmt.Errorf("list users: %w", err))
		return
	}
	out := make([]UserInfo, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var u UserRecord
		if store.Decode(string(kv.Key), kv.Value, &u) == nil {
			out = append(out, info(u))
		}
	}
	WriteJSON(w, http.StatusOK, out)
}

func (s *Server) handleUserDelete(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if c := Caller(r); c != nil && c.ID == "user:"+name {
		WriteError(w, Errorf(http.StatusConflict, "name", "refusing to delete the user making this request; log in as another admin"))
		return
	}
	resp, err := s.cfg.Store.Client().Delete(r.Context(), KeyUser(name))
	if err != nil {
		WriteError(w, fmt.Errorf("delete user %q: %w", name, err))
		return
	}
	if resp.Deleted == 0 {
		WriteError(w, Errorf(http.StatusNotFound, "name", "no user named %q", name))
		return
	}
	// Its sessions fail from now on (sessionCaller reads the user) and
	// expire with their leases.
	s.log.Info("user deleted", "op", "user", "user", name, "by", callerName(r))
	w.WriteHeader(http.StatusNoContent)
}

func info(u UserRecord) UserInfo {
	return UserInfo{Name: u.Name, Role: u.Role, Created: u.Created, Updated: u.Updated}
}

func callerName(r *http.Request) string {
	c := Caller(r)
	switch {
	case c == nil:
		return ""
	case c.Name != "":
		return c.Name
	}
	return c.ID
}
