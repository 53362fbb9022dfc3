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
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/pki"
)

// Client calls one agent's API.
type Client struct {
	base  string
	token string
	hc    *http.Client
}

// New makes a client for the API at base (https://host:port) with a
// bearer token and a TLS configuration (see pki.ClientTLS and
// pki.PinnedTLS).
func New(base, token string, tlsCfg *tls.Config) *Client {
	tr := &http.Transport{
		TLSClientConfig:     tlsCfg,
		TLSHandshakeTimeout: 5 * time.Second,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     time.Minute,
	}
	return &Client{base: strings.TrimRight(base, "/"), token: token, hc: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

// Base is the API's base URL.
func (c *Client) Base() string { return c.base }

// Close drops idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// Error is an error answer of the API.
type Error = api.Error

// IsStatus reports whether err is an API error with the HTTP status code.
func IsStatus(err error, code int) bool {
	var e *api.Error
	return errors.As(err, &e) && e.Status == code
}

// Do sends in (if not nil) as JSON and decodes the answer into out (if not
// nil). API errors are returned as *api.Error; network errors say which
// server could not be reached.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("reach haven API at %s: %w", c.base, err)
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
		b, err := os.ReadFile(filepath.Join(d, LocalFile))
		if err != nil {
			continue
		}
		var l api.Local
		if err := json.Unmarshal(b, &l); err != nil {
			return nil, d, fmt.Errorf("read %s: %w", filepath.Join(d, LocalFile), err)
		}
		return &l, d, nil
	}
	return nil, "", fmt.Errorf("no local haven agent found (looked in %s); pass --server and --token or set HAVEN_SERVER and HAVEN_TOKEN", strings.Join(dirs, ", "))
}

// Options are the connection settings a CLI command received.
type Options struct {
	Server string // --server or HAVEN_SERVER
	Token  string // --token or HAVEN_TOKEN
	CAFile string // --ca or HAVEN_CACERT
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
	if o.Server == "" || o.Token == "" || o.CAFile == "" {
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
	return New(o.Server, o.Token, tlsCfg), nil
}
