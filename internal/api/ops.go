package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/fence"
	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/store"
)

// Defaults of OpsConfig. A command endpoint answers within CommandWait
// plus its checks and queueing, and a client gives up on a call after
// client.RequestTimeout: the wait stays well below it, so that a slow
// manager gets a 202 (with the command to follow) and not a client
// timeout that says nothing (a previous release waited 15 s, as long as
// the client did).
const (
	DefaultCommandWait = 10 * time.Second
	DefaultHeartbeat   = 15 * time.Second
)

// Importer turns a hypervisor configuration (libvirt domain XML, Xen
// config) into a guest definition.
type Importer func(config []byte) (guestdef.Definition, error)

// OpsConfig wires the operator endpoints (guests, domains, commands,
// fencing, pools, policy, events) onto a Server.
type OpsConfig struct {
	Cluster *cluster.Store
	// CommandWait bounds how long a command endpoint waits for the manager
	// to carry a command out before answering 202 with the command's id.
	CommandWait time.Duration
	// Heartbeat is the interval of keepalive comments on the event stream.
	Heartbeat time.Duration
	// FenceRunner runs fence agents (nil: the default search path).
	FenceRunner *fence.Runner
	// Importers parse guest configurations by format name ("libvirt",
	// "xen") for POST /api/v1/guests with a format field.
	Importers map[string]Importer
	// Context ends long-lived answers (event streams) when the agent stops.
	Context context.Context
}

// Route is one endpoint registered by RegisterOps.
type Route struct {
	Method  string
	Pattern string
	Role    Role
}

// Ops serves the operator endpoints.
type Ops struct {
	srv    *Server
	cl     *cluster.Store
	cfg    OpsConfig
	log    *slog.Logger
	routes []Route

	limiterOnce sync.Once
	writes      *writeLimiter // per-guest and byte write budgets
}

// RegisterOps registers the operator endpoints and the guest status hook on
// s and returns them.
func RegisterOps(s *Server, cfg OpsConfig) *Ops {
	if cfg.CommandWait <= 0 {
		cfg.CommandWait = DefaultCommandWait
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = DefaultHeartbeat
	}
	if cfg.Context == nil {
		cfg.Context = context.Background()
	}
	if cfg.Cluster == nil {
		cfg.Cluster = cluster.New(s.Store())
	}
	o := &Ops{srv: s, cl: cfg.Cluster, cfg: cfg, log: s.log.With("component", "api")}
	o.registerGuests()
	o.registerDomains()
	o.registerNodeActions()
	o.registerFence()
	o.registerPools()
	o.registerVolumes()
	o.registerPolicy()
	o.registerEvents()
	o.registerWhatIf()
	o.registerStore()
	o.registerNotify()
	o.registerCA()
	o.handle("GET", "/api/v1/openapi.json", RolePublic, o.handleOpenAPI)
	s.AddStatusHook(o.statusHook)
	return o
}

// Routes lists the endpoints RegisterOps registered.
func (o *Ops) Routes() []Route { return append([]Route(nil), o.routes...) }

func (o *Ops) handle(method, pattern string, role Role, h func(http.ResponseWriter, *http.Request)) {
	o.routes = append(o.routes, Route{Method: method, Pattern: pattern, Role: role})
	o.srv.HandleFunc(method, pattern, role, h)
}

// handleLong is handle for an answer that may last (Server.HandleLong).
func (o *Ops) handleLong(method, pattern string, role Role, h func(http.ResponseWriter, *http.Request)) {
	o.routes = append(o.routes, Route{Method: method, Pattern: pattern, Role: role})
	o.srv.HandleLongFunc(method, pattern, role, h)
}

func (o *Ops) now() time.Time { return o.srv.now().UTC() }

// who names the caller of r for the audit log: the token's name and id.
func who(r *http.Request) string {
	c := Caller(r)
	switch {
	case c == nil:
		return "anonymous"
	case c.Name != "":
		return c.Name + " [token " + c.ID + "]"
	}
	return "token " + c.ID
}

// audit appends an operator action to the event log. A failure to log does
// not undo the action; it is logged.
func (o *Ops) audit(r *http.Request, guest, node, format string, a ...any) {
	o.auditAt(r, o.now(), guest, node, format, a...)
}

// auditAt is audit for an action that started at the given time (so that
// it sorts before what the manager did about it).
func (o *Ops) auditAt(r *http.Request, at time.Time, guest, node, format string, a ...any) {
	e := cluster.Event{At: at, Kind: "operator", Guest: guest, Node: node, Who: who(r), Msg: fmt.Sprintf(format, a...)}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
	defer cancel()
	if err := o.cl.AddEvent(ctx, e); err != nil {
		o.log.Warn("record operator action in the event log", "op", "audit", "guest", guest, "node", node, "err", err)
	}
}

// fieldError turns a validation error of package guestdef or storage into
// a 400 naming the first field at fault (the message lists them all).
func fieldError(err error) error {
	var fe *guestdef.FieldError
	if errors.As(err, &fe) {
		return &Error{Status: http.StatusBadRequest, Field: fe.Field, Message: err.Error()}
	}
	return &Error{Status: http.StatusBadRequest, Message: err.Error()}
}

// apiError maps the errors of package cluster and store to API errors.
func apiError(err error) error {
	var e *Error
	var fe *cluster.FieldError
	var gfe *guestdef.FieldError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &e):
		return e
	case errors.As(err, &fe):
		return &Error{Status: http.StatusBadRequest, Field: fe.Field, Message: fe.Error()}
	case errors.As(err, &gfe):
		return &Error{Status: http.StatusBadRequest, Field: gfe.Field, Message: err.Error()}
	case errors.Is(err, cluster.ErrNotFound):
		return &Error{Status: http.StatusNotFound, Message: err.Error()}
	case errors.Is(err, cluster.ErrConflict):
		return &Error{Status: http.StatusConflict, Field: "rev", Message: err.Error()}
	case errors.Is(err, cluster.ErrExists), errors.Is(err, store.ErrExists):
		return &Error{Status: http.StatusConflict, Field: "name", Message: err.Error()}
	case errors.Is(err, cluster.ErrInUse):
		return &Error{Status: http.StatusConflict, Field: "name", Message: err.Error()}
	case errors.Is(err, context.DeadlineExceeded):
		return StoreUnavailable("read the store", err)
	}
	return err
}

func writeErr(w http.ResponseWriter, err error) { WriteError(w, apiError(err)) }

// readBody reads a request body of at most MaxBodyBytes.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, Errorf(http.StatusRequestEntityTooLarge, "", "request body larger than %d bytes", MaxBodyBytes)
		}
		return nil, Errorf(http.StatusBadRequest, "", "read request body: %v", err)
	}
	return data, nil
}

// decodeStrict decodes one JSON value from data into v, rejecting unknown
// fields, with the error conventions of DecodeJSON. An empty body is an
// error unless emptyOK.
func decodeStrict(data []byte, v any, emptyOK bool) error {
	if len(bytes.TrimSpace(data)) == 0 {
		if emptyOK {
			return nil
		}
		return Errorf(http.StatusBadRequest, "", "empty request body; send a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var ute *json.UnmarshalTypeError
		var fe *fieldDecodeError
		switch {
		case errors.As(err, &fe):
			return Errorf(http.StatusBadRequest, fe.field, "%s", fe.msg)
		case errors.As(err, &ute) && ute.Field == "":
			return Errorf(http.StatusBadRequest, "", "bad JSON: the body must be an object, not %s", ute.Value)
		case errors.As(err, &ute):
			return Errorf(http.StatusBadRequest, ute.Field, "bad JSON: %s must be %s, not %s", ute.Field, ute.Type, ute.Value)
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			f := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			return Errorf(http.StatusBadRequest, f, "unknown field %q", f)
		default:
			return Errorf(http.StatusBadRequest, "", "bad JSON body: %v", err)
		}
	}
	if dec.More() {
		return Errorf(http.StatusBadRequest, "", "bad JSON body: more than one value")
	}
	return nil
}

// decodeBody reads and strictly decodes the request body into v.
func decodeBody(w http.ResponseWriter, r *http.Request, v any, emptyOK bool) error {
	data, err := readBody(w, r)
	if err != nil {
		return err
	}
	return decodeStrict(data, v, emptyOK)
}

// fieldDecodeError is a custom JSON type's complaint about its value.
type fieldDecodeError struct{ field, msg string }

func (e *fieldDecodeError) Error() string { return e.field + ": " + e.msg }
