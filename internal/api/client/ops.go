package client

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/fence"
	"github.com/haven-ha/haven/internal/manager"
)

func esc(s string) string { return url.PathEscape(s) }

// long is c without the overall request timeout, for calls that run fence
// agents (each run may take its device's timeout, 30 s by default); ctx
// bounds them.
func (c *Client) long() *Client {
	c.mu.Lock()
	down := c.down
	c.mu.Unlock()
	return &Client{token: c.token, hc: &http.Client{Transport: c.hc.Transport}, cacheDir: c.cacheDir, bases: c.Servers(), down: maps.Clone(down)}
}

// Guests is GET /api/v1/guests.
func (c *Client) Guests(ctx context.Context) ([]api.GuestRow, error) {
	var gs []api.GuestRow
	return gs, c.Do(ctx, "GET", "/api/v1/guests", nil, &gs)
}

// Guest is GET /api/v1/guests/{name}.
func (c *Client) Guest(ctx context.Context, name string) (*api.GuestInfo, error) {
	var g api.GuestInfo
	return &g, c.Do(ctx, "GET", "/api/v1/guests/"+esc(name), nil, &g)
}

// CreateGuest is POST /api/v1/guests. body is an api.GuestForm, or a map
// holding only the fields to set (absent fields take the defaults).
func (c *Client) CreateGuest(ctx context.Context, body any) (*api.GuestInfo, error) {
	var g api.GuestInfo
	return &g, c.Do(ctx, "POST", "/api/v1/guests", body, &g)
}

// ImportGuest is POST /api/v1/guests with a format ("libvirt", "xen") and
// the configuration's text; extra holds the fields to set over the
// imported ones.
func (c *Client) ImportGuest(ctx context.Context, format string, config []byte, extra api.GuestPatch) (*api.GuestInfo, error) {
	extra.Format, extra.Config = format, string(config)
	return c.CreateGuest(ctx, extra)
}

// EditGuest is PUT /api/v1/guests/{name}; body holds the fields to change
// (and "rev" to guard against concurrent changes).
func (c *Client) EditGuest(ctx context.Context, name string, body any) (*api.GuestInfo, error) {
	var g api.GuestInfo
	return &g, c.Do(ctx, "PUT", "/api/v1/guests/"+esc(name), body, &g)
}

// DeleteGuest is DELETE /api/v1/guests/{name}.
func (c *Client) DeleteGuest(ctx context.Context, name string) error {
	return c.Do(ctx, "DELETE", "/api/v1/guests/"+esc(name), nil, nil)
}

// GuestCommand is POST /api/v1/guests/{name}/{kind} (start, stop, disable,
// migrate, relocate; node for the last two). A command the manager has not
// finished within the server's wait comes back with Done unset: see
// Command.
func (c *Client) GuestCommand(ctx context.Context, name, kind, node string) (*api.CommandResult, error) {
	var res api.CommandResult
	var body any
	if node != "" {
		body = api.CommandRequest{Node: node}
	}
	return &res, c.Do(ctx, "POST", "/api/v1/guests/"+esc(name)+"/"+esc(kind), body, &res)
}

// Maintenance is POST /api/v1/nodes/{name}/maintenance.
func (c *Client) Maintenance(ctx context.Context, node string, on bool) (*api.CommandResult, error) {
	var res api.CommandResult
	return &res, c.Do(ctx, "POST", "/api/v1/nodes/"+esc(node)+"/maintenance", api.MaintenanceRequest{On: &on}, &res)
}

// ConfirmOff is POST /api/v1/nodes/{name}/confirm-off.
func (c *Client) ConfirmOff(ctx context.Context, node string) (*api.CommandResult, error) {
	var res api.CommandResult
	return &res, c.Do(ctx, "POST", "/api/v1/nodes/"+esc(node)+"/confirm-off", nil, &res)
}

// Command is GET /api/v1/commands/{id}.
func (c *Client) Command(ctx context.Context, id string) (*api.CommandResult, error) {
	var res api.CommandResult
	return &res, c.Do(ctx, "GET", "/api/v1/commands/"+esc(id), nil, &res)
}

// Domains is GET /api/v1/domains.
func (c *Client) Domains(ctx context.Context) ([]api.DomainInfo, error) {
	var ds []api.DomainInfo
	return ds, c.Do(ctx, "GET", "/api/v1/domains", nil, &ds)
}

// Domain is GET /api/v1/domains/{name}.
func (c *Client) Domain(ctx context.Context, name string) (*api.DomainInfo, error) {
	var d api.DomainInfo
	return &d, c.Do(ctx, "GET", "/api/v1/domains/"+esc(name), nil, &d)
}

// CreateDomain is POST /api/v1/domains (body: a model.Domain or a map).
func (c *Client) CreateDomain(ctx context.Context, body any) (*api.DomainInfo, error) {
	var d api.DomainInfo
	return &d, c.Do(ctx, "POST", "/api/v1/domains", body, &d)
}

// EditDomain is PUT /api/v1/domains/{name} (absent fields keep their values).
func (c *Client) EditDomain(ctx context.Context, name string, body any) (*api.DomainInfo, error) {
	var d api.DomainInfo
	return &d, c.Do(ctx, "PUT", "/api/v1/domains/"+esc(name), body, &d)
}

// DeleteDomain is DELETE /api/v1/domains/{name}.
func (c *Client) DeleteDomain(ctx context.Context, name string) error {
	return c.Do(ctx, "DELETE", "/api/v1/domains/"+esc(name), nil, nil)
}

// FenceConfig is GET /api/v1/fence/config (secrets redacted).
func (c *Client) FenceConfig(ctx context.Context) (*fence.Config, error) {
	var fc fence.Config
	return &fc, c.Do(ctx, "GET", "/api/v1/fence/config", nil, &fc)
}

// SetFenceConfig is PUT /api/v1/fence/config. body is a fence.Config or
// raw JSON (json.RawMessage); redacted secrets keep their stored values.
func (c *Client) SetFenceConfig(ctx context.Context, body any) (*fence.Config, error) {
	var fc fence.Config
	return &fc, c.Do(ctx, "PUT", "/api/v1/fence/config", body, &fc)
}

// SetFenceConfigValidated is SetFenceConfig with every device checked
// against its agent's metadata first (PUT ?validate=true).
func (c *Client) SetFenceConfigValidated(ctx context.Context, body any) (*fence.Config, error) {
	var fc fence.Config
	return &fc, c.long().Do(ctx, "PUT", "/api/v1/fence/config?validate=true", body, &fc)
}

// FenceTest is POST /api/v1/fence/test/{node}.
func (c *Client) FenceTest(ctx context.Context, node string) (*api.FenceTestOutcome, error) {
	var out api.FenceTestOutcome
	return &out, c.long().Do(ctx, "POST", "/api/v1/fence/test/"+esc(node), nil, &out)
}

// FenceNode is POST /api/v1/nodes/{name}/fence. It waits for the fence
// to end however long it takes; the fence goes on if ctx ends first.
func (c *Client) FenceNode(ctx context.Context, node string) (*api.FenceOutcome, error) {
	var out api.FenceOutcome
	return &out, c.long().Do(ctx, "POST", "/api/v1/nodes/"+esc(node)+"/fence", nil, &out)
}

// Pools is GET /api/v1/pools.
func (c *Client) Pools(ctx context.Context) ([]api.Pool, error) {
	var ps []api.Pool
	return ps, c.Do(ctx, "GET", "/api/v1/pools", nil, &ps)
}

// CreatePool is POST /api/v1/pools.
func (c *Client) CreatePool(ctx context.Context, p api.Pool) (*api.Pool, error) {
	var out api.Pool
	return &out, c.Do(ctx, "POST", "/api/v1/pools", p, &out)
}

// DeletePool is DELETE /api/v1/pools/{name}.
func (c *Client) DeletePool(ctx context.Context, name string) error {
	return c.Do(ctx, "DELETE", "/api/v1/pools/"+esc(name), nil, nil)
}

// Policy is GET /api/v1/policy.
func (c *Client) Policy(ctx context.Context) (*cluster.Policy, error) {
	var p cluster.Policy
	return &p, c.Do(ctx, "GET", "/api/v1/policy", nil, &p)
}

// SetPolicy is PUT /api/v1/policy; body holds the fields to change.
func (c *Client) SetPolicy(ctx context.Context, body any) (*cluster.Policy, error) {
	var p cluster.Policy
	return &p, c.Do(ctx, "PUT", "/api/v1/policy", body, &p)
}

// EventFilter selects events: the last N, of one guest or node.
type EventFilter struct {
	N     int
	Guest string
	Node  string
}

func (f EventFilter) query() string {
	q := url.Values{}
	if f.N > 0 {
		q.Set("n", strconv.Itoa(f.N))
	}
	if f.Guest != "" {
		q.Set("guest", f.Guest)
	}
	if f.Node != "" {
		q.Set("node", f.Node)
	}
	if len(q) == 0 {
		return ""
	}
	return "?" + q.Encode()
}

// Events is GET /api/v1/events.
func (c *Client) Events(ctx context.Context, f EventFilter) ([]cluster.Event, error) {
	var es []cluster.Event
	return es, c.Do(ctx, "GET", "/api/v1/events"+f.query(), nil, &es)
}

// StreamEvents is GET /api/v1/events/stream: it calls fn with the last
// f.N events and then with every new one, until ctx ends (nil), fn
// returns an error (that error), or the connection breaks.
func (c *Client) StreamEvents(ctx context.Context, f EventFilter, fn func(cluster.Event) error) error {
	path := "/api/v1/events/stream" + f.query()
	// No overall timeout: the stream lasts as long as ctx.
	hc := &http.Client{Transport: c.hc.Transport}
	resp, err := c.send(ctx, hc, "GET", path, nil, http.Header{"Accept": {"text/event-stream"}})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		e := &api.Error{Status: resp.StatusCode}
		if json.Unmarshal(data, e) != nil || e.Message == "" {
			e.Message = fmt.Sprintf("GET %s: HTTP %d: %s", path, resp.StatusCode, strings.TrimSpace(string(data)))
		}
		return e
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	var data strings.Builder
	kind := ""
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "" && kind == "end":
			// The agent closed the stream: the credential was revoked,
			// expired or lowered.
			var e struct {
				Error string `json:"error"`
			}
			_ = json.Unmarshal([]byte(data.String()), &e)
			return &api.Error{Status: http.StatusUnauthorized, Message: "event stream closed by the agent: " + e.Error}
		case line == "" && kind != "" && kind != "event":
			// Another kind of message (a report change): not an event.
			kind = ""
			data.Reset()
		case line == "":
			kind = ""
			if data.Len() > 0 {
				var e cluster.Event
				if err := json.Unmarshal([]byte(data.String()), &e); err != nil {
					return fmt.Errorf("decode event from the stream: %w", err)
				}
				data.Reset()
				if err := fn(e); err != nil {
					return err
				}
			}
		case strings.HasPrefix(line, "event:"):
			kind = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
		case strings.HasPrefix(line, "data:"):
			if data.Len() > 0 {
				data.WriteByte('\n')
			}
			data.WriteString(strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " "))
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("event stream from %s: %w", c.Base(), err)
	}
	return fmt.Errorf("event stream from %s ended: the agent stopped; run the command again", c.Base())
}

// WhatIf is GET /api/v1/whatif: what happens if the hosts fail (or, with
// maintenance, are put in maintenance) now.
func (c *Client) WhatIf(ctx context.Context, hosts []string, maintenance bool) (*manager.WhatIf, error) {
	key := "down"
	if maintenance {
		key = "maintenance"
	}
	var w manager.WhatIf
	return &w, c.Do(ctx, "GET", "/api/v1/whatif?"+url.Values{key: {strings.Join(hosts, ",")}}.Encode(), nil, &w)
}

// StoreSnapshot is GET /api/v1/store/snapshot: it writes the store's
// snapshot (database and SHA-256) to w and returns its size.
func (c *Client) StoreSnapshot(ctx context.Context, w io.Writer) (int64, error) {
	l := c.long()
	resp, err := l.send(ctx, l.hc, "GET", "/api/v1/store/snapshot", nil, nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		e := &api.Error{Status: resp.StatusCode}
		if json.Unmarshal(data, e) != nil || e.Message == "" {
			e.Message = fmt.Sprintf("GET /api/v1/store/snapshot: HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(data)))
		}
		return 0, e
	}
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return n, fmt.Errorf("receive the store snapshot: %w", err)
	}
	return n, nil
}
