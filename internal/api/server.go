// Package api owns Haven's HTTPS API: the server every agent runs, token
// authentication with roles, the router other components register their
// endpoints on (Server.Handle), JSON conventions for bodies and errors, and
// the cluster endpoints /api/v1/status, /api/v1/nodes and /api/v1/tokens.
// Its Go client is package api/client.
package api

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/haven-ha/haven/internal/pki"
	"github.com/haven-ha/haven/internal/store"
)

// Role is the authority an endpoint requires.
type Role = store.Role

// Roles. RolePublic endpoints need no token (they authenticate on their
// own, like /api/v1/join).
const (
	RolePublic   Role = ""
	RoleViewer        = store.RoleViewer
	RoleOperator      = store.RoleOperator
	RoleAdmin         = store.RoleAdmin
)

// MaxBodyBytes bounds request bodies read with DecodeJSON.
const MaxBodyBytes = 1 << 20

// Error is the JSON error body {"error": ..., "field": ...} with its HTTP
// status.
type Error struct {
	Status  int    `json:"-"`
	Message string `json:"error"`
	Field   string `json:"field,omitempty"`
}

func (e *Error) Error() string {
	if e.Field != "" {
		return e.Message + " (field " + e.Field + ")"
	}
	return e.Message
}

// Errorf makes an Error.
func Errorf(status int, field, format string, a ...any) *Error {
	return &Error{Status: status, Field: field, Message: fmt.Sprintf(format, a...)}
}

// StatusHook adds to the status answer (for example guest counts).
type StatusHook func(ctx context.Context, st *Status) error

// Config configures a Server.
type Config struct {
	Store  *store.Store
	Node   string // this agent's node name
	Logger *slog.Logger
	Now    func() time.Time
	// StoreTimeout bounds the store reads of a request's authentication
	// and of an ordinary GET (default DefaultStoreTimeout): a store that
	// does not answer gets a 503 that says so, not a hung request.
	StoreTimeout time.Duration
}

// DefaultStoreTimeout is Config.StoreTimeout's default: well inside the
// client's request timeout (15 s), so that the caller hears why.
const DefaultStoreTimeout = 5 * time.Second

// Server is the API server of one agent.
type Server struct {
	cfg Config
	mux *http.ServeMux
	log *slog.Logger
	now func() time.Time

	mu    sync.Mutex // guards hooks and srv
	hooks []StatusHook
	srv   *http.Server

	peersMu sync.Mutex // guards peers and peersAt
	peers   string
	peersAt time.Time

	// The login throttle and whether the session endpoints are served:
	// per server, so that servers in one process share nothing.
	gateOnce     sync.Once
	gate         *loginGate
	sessionsOnce sync.Once
}

// PeersHeader is the answer header that lists the API URLs of the
// cluster's hosts, comma-separated, so that clients learn them from any
// answer and try them when this agent stops answering.
const PeersHeader = "Haven-Peers"

// peersTTL is how long the peer list of PeersHeader is reused.
const peersTTL = 5 * time.Second

// peerList returns the API URLs of the registered hosts, read from the
// local store member (no quorum needed) at most every peersTTL.
func (s *Server) peerList(ctx context.Context) string {
	s.peersMu.Lock()
	defer s.peersMu.Unlock()
	if s.cfg.Store == nil || (!s.peersAt.IsZero() && s.now().Sub(s.peersAt) < peersTTL) {
		return s.peers
	}
	s.peersAt = s.now()
	rctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	regs, err := s.cfg.Store.Nodes(store.Serializable(rctx))
	if err != nil {
		return s.peers
	}
	var urls []string
	for _, r := range regs {
		if strings.HasPrefix(r.APIAddr, "https://") {
			urls = append(urls, r.APIAddr)
		}
	}
	s.peers = strings.Join(urls, ",")
	return s.peers
}

// New makes a Server with the cluster endpoints registered.
func New(cfg Config) *Server {
	s := &Server{cfg: cfg, mux: http.NewServeMux(), log: cfg.Logger, now: cfg.Now}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.cfg.StoreTimeout <= 0 {
		s.cfg.StoreTimeout = DefaultStoreTimeout
	}
	s.registerCluster()
	return s
}

// Store is the store the server reads.
func (s *Server) Store() *store.Store { return s.cfg.Store }

// Handle registers h for method and pattern (net/http ServeMux syntax, such
// as "/api/v1/guests/{name}"), requiring a token of at least role unless
// role is RolePublic. The caller's token is available to h through Caller.
//
// A GET is a read: the whole request, its authentication included, must
// be done within StoreTimeout, and a store read still running then fails
// with a 503 that says the store does not answer. Long answers (streams,
// consoles, snapshots) register with HandleLong instead.
func (s *Server) Handle(method, pattern string, role Role, h http.Handler) {
	h = s.auth(role, h)
	if method == http.MethodGet {
		h = s.bounded(h)
	}
	s.mux.Handle(method+" "+pattern, h)
}

// HandleLong is Handle for an answer that may last (a stream, a console,
// a snapshot): only its authentication is bounded by StoreTimeout.
func (s *Server) HandleLong(method, pattern string, role Role, h http.Handler) {
	s.mux.Handle(method+" "+pattern, s.auth(role, h))
}

// HandleLongFunc is HandleLong for a function.
func (s *Server) HandleLongFunc(method, pattern string, role Role, h func(http.ResponseWriter, *http.Request)) {
	s.HandleLong(method, pattern, role, http.HandlerFunc(h))
}

// bounded gives h's request a deadline StoreTimeout away.
func (s *Server) bounded(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), s.cfg.StoreTimeout)
		defer cancel()
		h.ServeHTTP(w, r.WithContext(ctx))
	})
}

// StoreUnavailable is the 503 of a request whose store read did not
// finish in time (or failed): what was being done, and what to try.
func StoreUnavailable(what string, err error) *Error {
	msg := "the cluster store does not answer"
	if errors.Is(err, context.DeadlineExceeded) {
		msg += " in time"
	}
	return Errorf(http.StatusServiceUnavailable, "", "%s: %s (it has lost quorum, or this agent cannot reach it: try again, or another host with --server): %v", what, msg, err)
}

// HandleFunc is Handle for a function.
func (s *Server) HandleFunc(method, pattern string, role Role, h func(http.ResponseWriter, *http.Request)) {
	s.Handle(method, pattern, role, http.HandlerFunc(h))
}

// AddStatusHook adds a hook run on every status request.
func (s *Server) AddStatusHook(h StatusHook) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hooks = append(s.hooks, h)
}

// Handler is the whole API as an http.Handler.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := s.now()
		// HTTPS only: browsers must never try the UI over plain HTTP.
		w.Header().Set("Strict-Transport-Security", "max-age=31536000")
		rw := &statusWriter{ResponseWriter: w, code: 200}
		// Unknown paths answer JSON too.
		if _, pattern := s.mux.Handler(r); pattern == "" {
			if allow := s.allowed(r); len(allow) > 0 {
				w.Header().Set("Allow", strings.Join(allow, ", "))
				WriteError(w, Errorf(http.StatusMethodNotAllowed, "", "%s is not allowed on %s; use %s", r.Method, r.URL.Path, strings.Join(allow, " or ")))
				return
			}
			WriteError(w, Errorf(http.StatusNotFound, "", "no such endpoint: %s %s", r.Method, r.URL.Path))
			return
		}
		if p := s.peerList(r.Context()); p != "" {
			w.Header().Set(PeersHeader, p)
		}
		s.mux.ServeHTTP(rw, r)
		s.log.Debug("api request", "op", "api", "method", r.Method, "path", r.URL.Path, "code", rw.code, "took", s.now().Sub(start))
	})
}

// allowed lists the methods registered for r's path.
func (s *Server) allowed(r *http.Request) []string {
	var out []string
	for _, m := range []string{"GET", "POST", "PUT", "PATCH", "DELETE"} {
		r2 := r.Clone(r.Context())
		r2.Method = m
		if _, p := s.mux.Handler(r2); p != "" {
			out = append(out, m)
		}
	}
	return out
}

// Serve serves the API with TLS on l until Shutdown.
func (s *Server) Serve(l net.Listener, tlsCfg *tls.Config) error {
	srv := &http.Server{
		Handler:   s.Handler(),
		TLSConfig: tlsCfg,
		// A client gets 10 s for its headers and 30 s for its whole
		// request (a trickled body is cut); the event stream lifts the
		// read deadline for itself. No WriteTimeout: streams are long.
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.mu.Lock()
	s.srv = srv
	s.mu.Unlock()
	err := srv.Serve(tls.NewListener(l, tlsCfg))
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops the server.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	srv := s.srv
	s.mu.Unlock()
	if srv == nil {
		return nil
	}
	return srv.Shutdown(ctx)
}

type callerKey struct{}

// Caller is the token record of the request's caller (nil on public
// endpoints).
func Caller(r *http.Request) *store.TokenRecord {
	t, _ := r.Context().Value(callerKey{}).(*store.TokenRecord)
	return t
}

// BearerToken extracts the token of an Authorization: Bearer header.
func BearerToken(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if t, ok := strings.CutPrefix(h, "Bearer "); ok {
		return strings.TrimSpace(t)
	}
	return ""
}

// Authenticate checks a bearer token against the store. It returns a 401
// Error for a missing, unknown, wrong or expired token.
func (s *Server) Authenticate(ctx context.Context, raw string) (*store.TokenRecord, error) {
	if raw == "" {
		return nil, Errorf(http.StatusUnauthorized, "", "no API token: pass --token or set HAVEN_TOKEN")
	}
	tok, err := pki.ParseToken(raw)
	if err != nil {
		return nil, Errorf(http.StatusUnauthorized, "", "malformed API token")
	}
	qctx, cancel := context.WithTimeout(ctx, quorumWait)
	rec, err := s.cfg.Store.Token(qctx, tok.ID)
	cancel()
	if err != nil && !errors.Is(err, store.ErrNotFound) && ctx.Err() == nil {
		// No quorum: accept what the nearest member knows, so that
		// operators can still see the cluster's state.
		rec, err = s.cfg.Store.Token(store.Serializable(ctx), tok.ID)
	}
	if errors.Is(err, store.ErrNotFound) || (err == nil && !pki.SecretMatches(tok.Secret, rec.Hash)) {
		return nil, Errorf(http.StatusUnauthorized, "", "unknown or revoked token")
	}
	if err != nil {
		return nil, StoreUnavailable("check token", err)
	}
	if !rec.Expires.IsZero() && !s.now().Before(rec.Expires) {
		return nil, Errorf(http.StatusUnauthorized, "", "token %s expired at %s; ask an admin for a new one", rec.ID, rec.Expires.Format(time.RFC3339))
	}
	return &rec, nil
}

func (s *Server) auth(role Role, h http.Handler) http.Handler {
	if role == RolePublic {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Bearer token, else cookie session with CSRF check: session.go.
		rec, err := s.authenticateRequest(r)
		if err != nil {
			WriteError(w, err)
			return
		}
		if rec.Role.Rank() < role.Rank() {
			WriteError(w, Errorf(http.StatusForbidden, "", "token %s has role %q; this needs %q", rec.ID, displayRole(rec.Role), role))
			return
		}
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, rec)))
	})
}

// Recheck authenticates r again, as its handler's start did, for
// long-lived answers (the event stream): it fails once the caller's token
// is revoked or expired, its session ended, its user was deleted or its
// password changed, or its role fell below role.
func (s *Server) Recheck(r *http.Request, role Role) error {
	rec, err := s.authenticateRequest(r)
	if err != nil {
		return err
	}
	if rec.Role.Rank() < role.Rank() {
		return Errorf(http.StatusForbidden, "", "token %s now has role %q; this needs %q", rec.ID, displayRole(rec.Role), role)
	}
	return nil
}

func displayRole(r Role) string {
	if r == "" {
		return "none"
	}
	return string(r)
}

// WriteJSON writes v as JSON with the status code.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// WriteError writes err as a JSON error. An *Error keeps its status; store
// sentinels map to 404 (ErrNotFound), 409 (ErrExists, ErrConflict) and 503
// (ErrNotLeader); anything else is a 500.
func WriteError(w http.ResponseWriter, err error) {
	var e *Error
	switch {
	case errors.As(err, &e):
	case errors.Is(err, store.ErrNotFound):
		e = &Error{Status: http.StatusNotFound, Message: err.Error()}
	case errors.Is(err, store.ErrExists), errors.Is(err, store.ErrConflict):
		e = &Error{Status: http.StatusConflict, Message: err.Error()}
	case errors.Is(err, store.ErrNotLeader):
		e = &Error{Status: http.StatusServiceUnavailable, Message: err.Error()}
	case errors.Is(err, context.DeadlineExceeded):
		e = StoreUnavailable("read the store", err)
	default:
		e = &Error{Status: http.StatusInternalServerError, Message: err.Error()}
	}
	WriteJSON(w, e.Status, e)
}

// DecodeJSON reads a JSON body of at most MaxBodyBytes into v, rejecting
// unknown fields. Errors are 400 or 413 Errors ready for WriteError.
func DecodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		var ute *json.UnmarshalTypeError
		switch {
		case errors.As(err, &mbe):
			return Errorf(http.StatusRequestEntityTooLarge, "", "request body larger than %d bytes", MaxBodyBytes)
		case errors.As(err, &ute):
			return Errorf(http.StatusBadRequest, ute.Field, "bad JSON: %s must be %s", ute.Field, ute.Type)
		case errors.Is(err, io.EOF):
			return Errorf(http.StatusBadRequest, "", "empty request body; send a JSON object")
		default:
			return Errorf(http.StatusBadRequest, "", "bad JSON body: %v", err)
		}
	}
	if dec.More() {
		return Errorf(http.StatusBadRequest, "", "bad JSON body: more than one value")
	}
	return nil
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Hijack lets WebSocket endpoints (the guest console) take the connection.
func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.code == 0 {
		w.code = http.StatusSwitchingProtocols
	}
	return http.NewResponseController(w.ResponseWriter).Hijack()
}
