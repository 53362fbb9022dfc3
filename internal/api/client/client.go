// Package client is the Go client of Haven's HTTPS API, used by the CLI,
// by joining agents and by tests. It also finds the local agent of a host
// (FindLocal).
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/pki"
)

// Client calls a cluster's API. It knows one or more agents' URLs and
// tries them in turn: an agent that does not answer within the connect
// timeout is skipped, so one dead host does not stop the CLI. Every
// answer names the cluster's hosts (header PeersHeader); the client adds
// them to the URLs it tries and, with a cache dir, remembers them for the
// next run.
type Client struct {
	token    string
	hc       *http.Client
	cacheDir string

	mu    sync.Mutex
	bases []string             // in the order to try; bases[0] answered last
	down  map[string]time.Time // agents that did not answer, and when
}

// Timeouts of one attempt. A host that does not accept a connection
// within ConnectTimeout is skipped; RequestTimeout bounds a whole
// ordinary call on one host (calls that run fence agents and event
// streams have none: their context bounds them).
const (
	ConnectTimeout = time.Second
	// RequestTimeout leaves a command endpoint its wait for the manager
	// (api.DefaultCommandWait, 10 s; 15 s in earlier releases) and the
	// checks before it.
	RequestTimeout = 20 * time.Second
)

// PeersHeader is the answer header that lists the API URLs of the
// cluster's hosts, comma-separated.
const PeersHeader = api.PeersHeader

// New makes a client for the API at base (https://host:port, or several
// comma-separated) with a bearer token and a TLS configuration (see
// pki.ClientTLS and pki.PinnedTLS).
func New(base, token string, tlsCfg *tls.Config) *Client {
	d := &net.Dialer{Timeout: ConnectTimeout, KeepAlive: 15 * time.Second}
	tr := &http.Transport{
		DialContext:         d.DialContext,
		TLSClientConfig:     tlsCfg,
		TLSHandshakeTimeout: 3 * time.Second,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     time.Minute,
	}
	c := &Client{token: token, hc: &http.Client{Transport: tr, Timeout: RequestTimeout}}
	for _, b := range strings.Split(base, ",") {
		if b = strings.TrimRight(strings.TrimSpace(b), "/"); b != "" {
			c.bases = appendNew(c.bases, b)
		}
	}
	return c
}

func appendNew(list []string, s string) []string {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	return append(list, s)
}

// Base is the API's base URL: the agent that answered last (the first
// given before any call).
func (c *Client) Base() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.bases) == 0 {
		return ""
	}
	return c.bases[0]
}

// Servers lists the URLs the client tries, in order.
func (c *Client) Servers() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.bases...)
}

// Close drops idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// Error is an error answer of the API.
type Error = api.Error

// IsStatus reports whether err is an API error with the HTTP status code.
func IsStatus(err error, code int) bool {
	var e *api.Error
	return errors.As(err, &e) && e.Status == code
}

// Unreachable is the error when no agent answered.
type Unreachable struct {
	Tried []string // the URLs tried
	Last  error    // the last attempt's error
}

func (e *Unreachable) Error() string {
	return fmt.Sprintf("no haven agent answers (tried %s): %v; check that the hosts are up, or name a live one with --server", strings.Join(e.Tried, ", "), e.Last)
}

func (e *Unreachable) Unwrap() error { return e.Last }

// Do sends in (if not nil) as JSON and decodes the answer into out (if not
// nil). API errors are returned as *api.Error; when no agent answers, an
// *Unreachable names the ones tried.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body []byte
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = b
	}
	resp, err := c.send(ctx, c.hc, method, path, body, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("read answer of %s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		e := &api.Error{Status: resp.StatusCode}
		if json.Unmarshal(data, e) != nil || e.Message == "" {
			e.Message = fmt.Sprintf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, strings.TrimSpace(string(data)))
		}
		return e
	}
	if out != nil && resp.StatusCode != http.StatusNoContent {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("decode answer of %s %s: %w", method, path, err)
		}
	}
	return nil
}

// send makes the request on each known agent in turn until one answers.
// It moves on after an error that proves the request was not handled:
// no connection, a failed TLS handshake, or (for GET, which is safe to
// repeat) a timeout.
func (c *Client) send(ctx context.Context, hc *http.Client, method, path string, body []byte, hdr http.Header) (*http.Response, error) {
	bases := c.Servers()
	if len(bases) == 0 {
		return nil, errors.New("no haven API URL: pass --server or set HAVEN_SERVER")
	}
	bases = c.liveFirst(bases)
	if method == http.MethodGet && body == nil && hc == c.hc {
		// Ordinary reads race; long ones (snapshots, streams) are not
		// worth asking twice.
		return c.sendRace(ctx, hc, path, hdr, bases)
	}
	var last error
	var tried []string
	for i := 0; i < len(bases); i++ {
		base := bases[i]
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", method, path, err)
		}
		for k, v := range hdr {
			req.Header[k] = v
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		resp, err := hc.Do(req)
		if err == nil {
			c.answered(base, resp.Header.Get(PeersHeader))
			return resp, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		tried = append(tried, base)
		last = fmt.Errorf("%s: %w", base, err)
		c.markDown(base)
		if !retryable(method, err) {
			return nil, fmt.Errorf("reach haven API at %s: %w", base, err)
		}
		if i == len(bases)-1 {
			// Out of known agents: the cache may know more of this cluster.
			for _, b := range c.cached(bases) {
				bases = appendNew(bases, b)
			}
		}
	}
	return nil, &Unreachable{Tried: tried, Last: last}
}

// HedgeDelay is how long a GET waits for an agent before it asks the next
// one too, in parallel (the first answer wins): an agent whose host died
// (no answer to connect, or a frozen process) then costs HedgeDelay, not
// ConnectTimeout or the TLS handshake timeout.
const HedgeDelay = 250 * time.Millisecond

// sendRace is send for a GET (safe to repeat): the agents are asked in
// order, each HedgeDelay after the one before or at once when it failed,
// and the first answer is returned; the agents asked before the one that
// answered that had not even completed a connection (TCP and TLS) are
// marked down (tried last next time); a connected but slow one is not.
func (c *Client) sendRace(ctx context.Context, hc *http.Client, path string, hdr http.Header, bases []string) (*http.Response, error) {
	type result struct {
		i    int
		resp *http.Response
		err  error
	}
	ch := make(chan result, 64)
	var cancels []context.CancelFunc
	var connected []*atomic.Bool
	pending := 0
	start := func(i int) {
		actx, cancel := context.WithCancel(ctx)
		cancels = append(cancels, cancel)
		got := &atomic.Bool{}
		connected = append(connected, got)
		actx = httptrace.WithClientTrace(actx, &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { got.Store(true) }})
		pending++
		req, err := http.NewRequestWithContext(actx, http.MethodGet, bases[i]+path, nil)
		if err != nil {
			ch <- result{i, nil, err}
			return
		}
		for k, v := range hdr {
			req.Header[k] = v
		}
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		go func() {
			resp, err := hc.Do(req)
			ch <- result{i, resp, err}
		}()
	}
	// drain closes the answers of the attempts left running.
	drain := func(n int) {
		go func() {
			for range n {
				if r := <-ch; r.resp != nil {
					r.resp.Body.Close()
				}
			}
		}()
	}
	var last error
	var tried []string
	failed := map[int]bool{}
	start(0)
	next := 1
	timer := time.NewTimer(HedgeDelay)
	defer timer.Stop()
	for pending > 0 {
		select {
		case r := <-ch:
			pending--
			if r.err == nil {
				base := bases[r.i]
				for i := 0; i < next; i++ {
					if i != r.i {
						cancels[i]()
						if i < r.i && !failed[i] && !connected[i].Load() {
							c.markDown(bases[i])
						}
					}
				}
				drain(pending)
				c.answered(base, r.resp.Header.Get(PeersHeader))
				r.resp.Body = &cancelBody{ReadCloser: r.resp.Body, cancel: cancels[r.i]}
				return r.resp, nil
			}
			cancels[r.i]()
			if ctx.Err() != nil {
				drain(pending)
				return nil, ctx.Err()
			}
			err := r.err
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err
			}
			failed[r.i] = true
			tried = append(tried, bases[r.i])
			last = fmt.Errorf("%s: %w", bases[r.i], err)
			c.markDown(bases[r.i])
			if next == len(bases) {
				// Out of known agents: the cache may know more of this cluster.
				for _, b := range c.cached(bases) {
					bases = appendNew(bases, b)
				}
			}
			if next < len(bases) {
				start(next)
				next++
				timer.Reset(HedgeDelay)
			}
		case <-timer.C:
			if next == len(bases) {
				for _, b := range c.cached(bases) {
					bases = appendNew(bases, b)
				}
			}
			if next < len(bases) {
				start(next)
				next++
				timer.Reset(HedgeDelay)
			}
		}
	}
	return nil, &Unreachable{Tried: tried, Last: last}
}

// cancelBody releases the winning attempt's context once its answer is
// read and closed.
type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// retryable reports whether err proves the request did not reach an
// agent's handler (or may be repeated anyway).
func retryable(method string, err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return method == http.MethodGet || strings.Contains(err.Error(), "TLS handshake")
	}
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH) {
		return true
	}
	return method == http.MethodGet && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET))
}

// DownFor is how long an agent that did not answer is tried last (by
// this process, and by the next ones through the cache dir).
const DownFor = time.Minute

const downFile = "down.json"

// liveFirst orders bases with the agents recently seen down last.
func (c *Client) liveFirst(bases []string) []string {
	c.mu.Lock()
	down := c.down
	c.mu.Unlock()
	if down == nil && c.cacheDir != "" {
		down = map[string]time.Time{}
		if b, err := os.ReadFile(filepath.Join(c.cacheDir, downFile)); err == nil {
			_ = json.Unmarshal(b, &down)
		}
		c.mu.Lock()
		c.down = down
		c.mu.Unlock()
	}
	var live, dead []string
	for _, b := range bases {
		if at, ok := down[b]; ok && time.Since(at) < DownFor {
			dead = append(dead, b)
		} else {
			live = append(live, b)
		}
	}
	return append(live, dead...)
}

// markDown remembers that base did not answer; upAgain forgets it.
func (c *Client) markDown(base string) { c.setDown(base, true) }

func (c *Client) setDown(base string, down bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.down == nil {
		c.down = map[string]time.Time{}
	}
	_, was := c.down[base]
	if down {
		c.down[base] = time.Now()
	} else if was {
		delete(c.down, base)
	} else {
		return
	}
	if c.cacheDir != "" {
		if b, err := json.Marshal(c.down); err == nil {
			writeCache(c.cacheDir, downFile, b)
		}
	}
}

// answered moves base to the front and learns the peers an answer named.
func (c *Client) answered(base, peers string) {
	c.setDown(base, false)
	c.mu.Lock()
	defer c.mu.Unlock()
	out := []string{base}
	for _, b := range c.bases {
		out = appendNew(out, b)
	}
	for _, p := range strings.Split(peers, ",") {
		if p = strings.TrimRight(strings.TrimSpace(p), "/"); strings.HasPrefix(p, "https://") {
			out = appendNew(out, p)
		}
	}
	c.bases = out
	if peers != "" && c.cacheDir != "" {
		rememberPeers(c.cacheDir, out)
	}
}

// SetCacheDir makes the client remember the cluster's hosts in dir
// (peers.json) and fall back to them when none of its URLs answers.
func (c *Client) SetCacheDir(dir string) { c.cacheDir = dir }

// cached returns the remembered hosts of the cluster that bases belong to.
func (c *Client) cached(bases []string) []string {
	if c.cacheDir == "" {
		return nil
	}
	for _, group := range readPeers(c.cacheDir) {
		for _, g := range group {
			for _, b := range bases {
				if g == b {
					return group
				}
			}
		}
	}
	return nil
}

const peersFile = "peers.json"

// readPeers reads the remembered clusters: each a list of API URLs.
func readPeers(dir string) [][]string {
	b, err := os.ReadFile(filepath.Join(dir, peersFile))
	if err != nil {
		return nil
	}
	var groups [][]string
	if json.Unmarshal(b, &groups) != nil {
		return nil
	}
	return groups
}

// rememberPeers stores urls as one cluster's hosts, replacing the groups
// that share a URL with it. Errors are ignored: the cache is a help only.
func rememberPeers(dir string, urls []string) {
	groups := [][]string{urls}
	for _, g := range readPeers(dir) {
		shared := false
		for _, u := range g {
			for _, v := range urls {
				shared = shared || u == v
			}
		}
		if !shared {
			groups = append(groups, g)
		}
	}
	b, err := json.Marshal(groups)
	if err != nil {
		return
	}
	writeCache(dir, peersFile, b)
}

// writeCache replaces dir/name with b; errors are ignored (the cache is
// a help only).
func writeCache(dir, name string, b []byte) {
	if os.MkdirAll(dir, 0o700) != nil {
		return
	}
	tmp, err := os.CreateTemp(dir, name+".*")
	if err != nil {
		return
	}
	_, werr := tmp.Write(b)
	cerr := tmp.Close()
	if werr != nil || cerr != nil || os.Rename(tmp.Name(), filepath.Join(dir, name)) != nil {
		os.Remove(tmp.Name())
	}
}

// Status is GET /api/v1/status.
func (c *Client) Status(ctx context.Context) (*api.Status, error) {
	var st api.Status
	return &st, c.Do(ctx, "GET", "/api/v1/status", nil, &st)
}

// Nodes is GET /api/v1/nodes.
func (c *Client) Nodes(ctx context.Context) ([]api.Node, error) {
	var ns []api.Node
	return ns, c.Do(ctx, "GET", "/api/v1/nodes", nil, &ns)
}

// RemoveNode is DELETE /api/v1/nodes/{name}.
func (c *Client) RemoveNode(ctx context.Context, name string) error {
	return c.Do(ctx, "DELETE", "/api/v1/nodes/"+url.PathEscape(name), nil, nil)
}

// CreateToken is POST /api/v1/tokens.
func (c *Client) CreateToken(ctx context.Context, req api.TokenRequest) (*api.TokenResponse, error) {
	var tr api.TokenResponse
	return &tr, c.Do(ctx, "POST", "/api/v1/tokens", req, &tr)
}

// Tokens is GET /api/v1/tokens.
func (c *Client) Tokens(ctx context.Context) ([]api.TokenInfo, error) {
	var ts []api.TokenInfo
	return ts, c.Do(ctx, "GET", "/api/v1/tokens", nil, &ts)
}

// RevokeToken is DELETE /api/v1/tokens/{id}.
func (c *Client) RevokeToken(ctx context.Context, id string) error {
	return c.Do(ctx, "DELETE", "/api/v1/tokens/"+url.PathEscape(id), nil, nil)
}

// Join is POST /api/v1/join (the client's token must be a join token).
func (c *Client) Join(ctx context.Context, req api.JoinRequest) (*api.JoinResponse, error) {
	var jr api.JoinResponse
	return &jr, c.Do(ctx, "POST", "/api/v1/join", req, &jr)
}

// LocalFile is the name of the file an agent writes in its data dir.
const LocalFile = "local.json"

// DefaultDataDir is the agent's data dir on a real host.
const DefaultDataDir = "/var/lib/haven"

// DevDataDir is the data dir of `haven agent --dev`.
func DevDataDir() string { return filepath.Join(os.TempDir(), "haven-dev") }

// WriteLocal writes dir/local.json.
func WriteLocal(dir string, l api.Local) error {
	b, _ := json.MarshalIndent(l, "", "  ")
	tmp := filepath.Join(dir, LocalFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	return os.Rename(tmp, filepath.Join(dir, LocalFile))
}

// FindLocal looks for a local agent's local.json in $HAVEN_DATA_DIR, then
// DefaultDataDir, then DevDataDir, and returns it with the data dir.
func FindLocal(getenv func(string) string) (*api.Local, string, error) {
	var dirs []string
	if d := getenv("HAVEN_DATA_DIR"); d != "" {
		dirs = append(dirs, d)
	}
	dirs = append(dirs, DefaultDataDir, DevDataDir())
	for _, d := range dirs {
		f := filepath.Join(d, LocalFile)
		if _, err := os.Lstat(f); err != nil {
			continue
		}
		// Only files root or this user made are believed (see
		// CheckTrusted), and so are the CA and token files they name.
		if err := errors.Join(CheckTrusted(d, true), CheckTrusted(f, false)); err != nil {
			return nil, d, fmt.Errorf("local agent info: %w", err)
		}
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var l api.Local
		if err := json.Unmarshal(b, &l); err != nil {
			return nil, d, fmt.Errorf("read %s: %w", f, err)
		}
		for _, p := range []string{l.CAFile, l.TokenFile} {
			if p == "" {
				continue
			}
			if err := CheckTrusted(p, false); err != nil {
				return nil, d, fmt.Errorf("local agent info %s: %w", f, err)
			}
		}
		return &l, d, nil
	}
	return nil, "", fmt.Errorf("no local haven agent found (looked in %s); pass --server and --token or set HAVEN_SERVER and HAVEN_TOKEN", strings.Join(dirs, ", "))
}

// Options are the connection settings a CLI command received.
type Options struct {
	Server string // --server or HAVEN_SERVER: one URL or several, comma-separated
	Token  string // --token or HAVEN_TOKEN
	CAFile string // --ca or HAVEN_CACERT
	// CacheDir, if set, is where the client remembers the cluster's hosts.
	CacheDir string
}

// FromOptions builds a client from flags and environment, falling back to
// the local agent for whatever is not given.
func FromOptions(o Options, getenv func(string) string) (*Client, error) {
	if o.Server == "" {
		o.Server = getenv("HAVEN_SERVER")
	}
	if o.Token == "" {
		o.Token = getenv("HAVEN_TOKEN")
	}
	if o.CAFile == "" {
		o.CAFile = getenv("HAVEN_CACERT")
	}
	// A server or token given by the user is never mixed with what a local
	// agent's files say: a named server needs its CA named too, and a
	// token is only sent to a server the user named or the local agent.
	switch {
	case o.Server != "" && o.CAFile == "":
		return nil, errors.New("no cluster CA certificate for the server you named: pass --ca FILE or set HAVEN_CACERT")
	case o.Server == "" && o.Token != "":
		return nil, errors.New("a token but no server: pass --server URL (and --ca FILE) with --token or HAVEN_TOKEN")
	}
	if o.Server == "" && o.Token == "" {
		l, _, err := FindLocal(getenv)
		if err != nil {
			if o.Server == "" || o.Token == "" {
				return nil, err
			}
		} else {
			if o.Server == "" {
				o.Server = l.APIURL
			}
			if o.CAFile == "" {
				o.CAFile = l.CAFile
			}
			if o.Token == "" && l.TokenFile != "" {
				b, err := os.ReadFile(l.TokenFile)
				if err != nil {
					return nil, fmt.Errorf("read the local admin token: %w; pass --token or set HAVEN_TOKEN", err)
				}
				o.Token = strings.TrimSpace(string(b))
			}
		}
	}
	if o.CAFile == "" {
		return nil, errors.New("no cluster CA certificate: pass --ca FILE or set HAVEN_CACERT")
	}
	ca, err := os.ReadFile(o.CAFile)
	if err != nil {
		return nil, fmt.Errorf("read cluster CA certificate: %w", err)
	}
	tlsCfg, err := pki.ClientTLS(ca, nil, nil)
	if err != nil {
		return nil, err
	}
	c := New(o.Server, o.Token, tlsCfg)
	c.SetCacheDir(o.CacheDir)
	return c, nil
}
