// Package console serves a guest's serial console over the API: GET
// /api/v1/guests/{name}/console upgrades to a WebSocket whose binary
// messages carry the console's bytes both ways. Any agent answers: the one
// whose host runs the guest attaches to it (hypervisor.Console), any other
// proxies to that agent with the caller's own credentials, so no console or
// VNC port is ever open to the network. Only operators and admins may open a
// console, and every session (its opening and its end) is in the audit log,
// written by the agent that attaches.
package console

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/hypervisor"
	"github.com/haven-ha/haven/internal/savedstate"
	"github.com/haven-ha/haven/internal/store"
)

// Path is the console endpoint's pattern; DisplayPath the graphical
// display's (VNC's RFB protocol in binary messages, for noVNC).
const (
	Path        = "/api/v1/guests/{name}/console"
	DisplayPath = "/api/v1/guests/{name}/vnc"
)

// Config wires the console endpoint of one agent.
type Config struct {
	Node    string
	Store   *store.Store
	Cluster *cluster.Store
	// Driver is this host's hypervisor driver; nil on a host without
	// guests (it only proxies).
	Driver hypervisor.Driver
	// PeerTLS gives the configuration to dial another agent's API (the
	// cluster's trust bundle and this node's certificate), one for each
	// connection: both change (CA rotation, renewal).
	PeerTLS func() *tls.Config
	Logger  *slog.Logger
	Now     func() time.Time
}

// Register adds the console endpoint to s.
func Register(s *api.Server, cfg Config) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger.With("component", "console")
	s.HandleLongFunc("GET", "/api/v1/guests/{name}/console", api.RoleOperator, (&handler{cfg: cfg, log: log, kind: kindConsole}).serve)
	s.HandleLongFunc("GET", "/api/v1/guests/{name}/vnc", api.RoleOperator, (&handler{cfg: cfg, log: log, kind: kindDisplay}).serve)
}

type kind int

const (
	kindConsole kind = iota
	kindDisplay
)

type handler struct {
	cfg  Config
	log  *slog.Logger
	kind kind
}

// what names the session's kind in messages.
func (h *handler) what() string {
	if h.kind == kindDisplay {
		return "graphical display (VNC)"
	}
	return "serial console"
}

// open connects to the guest's console or display here.
func (h *handler) open(ctx context.Context, name string) (net.Conn, error) {
	if h.kind == kindDisplay {
		return h.cfg.Driver.(hypervisor.Display).OpenDisplay(ctx, name)
	}
	return h.cfg.Driver.(hypervisor.Console).OpenConsole(ctx, name)
}

var upgrader = websocket.Upgrader{
	ReadBufferSize:  16 << 10,
	WriteBufferSize: 16 << 10,
	// noVNC may ask for the "binary" subprotocol.
	Subprotocols: []string{"binary"},
	// The default origin check: a browser page of another site may not
	// open a console with the user's session cookie.
}

// upgrade turns the request into a WebSocket without the server's read
// deadline (a console session is long).
func upgrade(w http.ResponseWriter, r *http.Request) (*websocket.Conn, error) {
	_ = http.NewResponseController(w).SetReadDeadline(time.Time{})
	ws, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return nil, err
	}
	_ = ws.NetConn().SetDeadline(time.Time{})
	return ws, nil
}

// localParam marks a request proxied by another agent: attach here or fail,
// never proxy again.
const localParam = "local"

func (h *handler) serve(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	local := r.URL.Query().Get(localParam) != ""
	if h.runsHere(r.Context(), name) {
		h.attach(w, r, name)
		return
	}
	if local {
		api.WriteError(w, api.Errorf(http.StatusConflict, "", "guest %q does not run on host %s", name, h.cfg.Node))
		return
	}
	node, addr, err := h.where(r.Context(), name)
	if err != nil {
		api.WriteError(w, err)
		return
	}
	h.proxy(w, r, name, node, addr)
}

func (h *handler) runsHere(ctx context.Context, name string) bool {
	d := h.cfg.Driver
	if d == nil {
		return false
	}
	_, console := d.(hypervisor.Console)
	_, display := d.(hypervisor.Display)
	if (h.kind == kindConsole && !console) || (h.kind == kindDisplay && !display) {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := d.Status(ctx, name)
	return err == nil && (st.State == hypervisor.Running || st.State == hypervisor.Paused)
}

// where finds the host that runs the guest and its agent's API address.
func (h *handler) where(ctx context.Context, name string) (string, string, error) {
	st, err := savedstate.Load(ctx, h.cfg.Cluster.Raw().Client())
	if err != nil {
		return "", "", api.Errorf(http.StatusServiceUnavailable, "", "where guest %q runs: %v", name, err)
	}
	g := st.Guest(name)
	if g == nil {
		return "", "", api.Errorf(http.StatusNotFound, "", "no guest %q", name)
	}
	if !g.Running || g.Node == "" {
		return "", "", api.Errorf(http.StatusConflict, "", "guest %q is not running (%s): it has no console", name, g.State)
	}
	live, _, err := h.cfg.Store.LiveNodes(ctx)
	if err != nil {
		return "", "", api.Errorf(http.StatusServiceUnavailable, "", "the address of host %s: %v", g.Node, err)
	}
	f, ok := live[g.Node]
	if !ok || f.APIAddr == "" {
		return "", "", api.Errorf(http.StatusServiceUnavailable, "", "host %s, which runs guest %q, is not online", g.Node, name)
	}
	return g.Node, f.APIAddr, nil
}

// attach serves a console session of a guest running here.
func (h *handler) attach(w http.ResponseWriter, r *http.Request, name string) {
	ctx := r.Context()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	conn, err := h.open(cctx, name)
	cancel()
	if err != nil {
		api.WriteError(w, api.Errorf(http.StatusBadGateway, "", "%v", err))
		return
	}
	defer conn.Close()
	ws, err := upgrade(w, r)
	if err != nil {
		return // the upgrader answered
	}
	defer ws.Close()
	who := caller(r)
	start := h.cfg.Now()
	h.audit(name, who, fmt.Sprintf("opened the %s of %s on %s", h.what(), name, h.cfg.Node))
	h.log.Info("console session opened", "guest", name, "who", who, "kind", h.what())
	why := pump(ws, conn)
	h.audit(name, who, fmt.Sprintf("closed the %s of %s on %s after %s", h.what(), name, h.cfg.Node, h.cfg.Now().Sub(start).Round(time.Second)))
	h.log.Info("console session closed", "guest", name, "who", who, "kind", h.what(), "why", why)
}

// pump copies between the WebSocket and the console until either ends.
func pump(ws *websocket.Conn, conn net.Conn) string {
	done := make(chan string, 2)
	var wmu sync.Mutex
	go func() {
		buf := make([]byte, 16<<10)
		for {
			n, err := conn.Read(buf)
			if n > 0 {
				wmu.Lock()
				werr := ws.WriteMessage(websocket.BinaryMessage, buf[:n])
				wmu.Unlock()
				if werr != nil {
					done <- "client gone: " + werr.Error()
					return
				}
			}
			if err != nil {
				done <- "console ended: " + err.Error()
				return
			}
		}
	}()
	go func() {
		for {
			_, msg, err := ws.ReadMessage()
			if err != nil {
				done <- "client left: " + err.Error()
				return
			}
			if _, err := conn.Write(msg); err != nil {
				done <- "console ended: " + err.Error()
				return
			}
		}
	}()
	why := <-done
	wmu.Lock()
	ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	wmu.Unlock()
	ws.Close()
	conn.Close()
	return why
}

// proxy relays a session to the agent of the host that runs the guest, with
// the caller's credentials (its bearer token or session cookie).
func (h *handler) proxy(w http.ResponseWriter, r *http.Request, name, node, addr string) {
	u, err := url.Parse(addr)
	if err != nil || u.Host == "" {
		api.WriteError(w, api.Errorf(http.StatusBadGateway, "", "host %s has a bad API address %q", node, addr))
		return
	}
	suffix := "/console"
	if h.kind == kindDisplay {
		suffix = "/vnc"
	}
	target := url.URL{Scheme: "wss", Host: u.Host, Path: "/api/v1/guests/" + url.PathEscape(name) + suffix, RawQuery: localParam + "=1"}
	hdr := http.Header{}
	for _, k := range []string{"Authorization", "Cookie"} {
		if v := r.Header.Get(k); v != "" {
			hdr.Set(k, v)
		}
	}
	d := websocket.Dialer{TLSClientConfig: h.cfg.PeerTLS(), HandshakeTimeout: 10 * time.Second}
	peer, resp, err := d.DialContext(r.Context(), target.String(), hdr)
	if err != nil {
		msg := err.Error()
		code := http.StatusBadGateway
		if resp != nil {
			code = resp.StatusCode
			msg = fmt.Sprintf("host %s answered %s", node, resp.Status)
		}
		api.WriteError(w, api.Errorf(code, "", "%s of %q through host %s: %s", h.what(), name, node, msg))
		return
	}
	defer peer.Close()
	ws, err := upgrade(w, r)
	if err != nil {
		return
	}
	defer ws.Close()
	done := make(chan struct{}, 2)
	relay := func(from, to *websocket.Conn) {
		defer func() { done <- struct{}{} }()
		for {
			kind, msg, err := from.ReadMessage()
			if err != nil {
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					to.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(ce.Code, ce.Text), time.Now().Add(time.Second))
				}
				return
			}
			if err := to.WriteMessage(kind, msg); err != nil {
				return
			}
		}
	}
	go relay(ws, peer)
	go relay(peer, ws)
	<-done
}

func (h *handler) audit(guest, who, msg string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e := cluster.Event{At: h.cfg.Now().UTC(), Kind: "operator", Guest: guest, Node: h.cfg.Node, Who: who, Msg: msg}
	if err := h.cfg.Cluster.AddEvent(ctx, e); err != nil {
		h.log.Error("console session not in the audit log", "guest", guest, "who", who, "err", err)
	}
}

// caller names the caller for the audit log, as the API's own audit does.
func caller(r *http.Request) string {
	c := api.Caller(r)
	switch {
	case c == nil:
		return "anonymous"
	case c.Name != "":
		return c.Name + " [token " + c.ID + "]"
	}
	return "token " + strings.TrimSpace(c.ID)
}
