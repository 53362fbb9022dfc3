package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/haven-ha/haven/internal/api"
)

// Console is an open serial console session of a guest: what is written
// goes to the guest's first serial port, what the guest prints is read.
type Console struct {
	ws  *websocket.Conn
	buf []byte
}

// OpenConsole attaches to a running guest's serial console through any
// agent (the agent of its host serves it; the others proxy). Only
// operators and admins may; the session is in the audit log.
func (c *Client) OpenConsole(ctx context.Context, guest string) (*Console, error) {
	var tlsCfg = c.hc.Transport.(*http.Transport).TLSClientConfig
	d := websocket.Dialer{TLSClientConfig: tlsCfg, HandshakeTimeout: 10 * time.Second}
	hdr := http.Header{"Authorization": {"Bearer " + c.token}}
	var last error
	for _, base := range c.Servers() {
		u, err := url.Parse(base)
		if err != nil {
			last = err
			continue
		}
		u.Scheme = strings.Replace(u.Scheme, "http", "ws", 1)
		u.Path = "/api/v1/guests/" + url.PathEscape(guest) + "/console"
		ws, resp, err := d.DialContext(ctx, u.String(), hdr)
		if err == nil {
			return &Console{ws: ws}, nil
		}
		if resp != nil {
			// The agent answered: its error is the answer.
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			e := &api.Error{Status: resp.StatusCode}
			if json.Unmarshal(b, e) != nil || e.Message == "" {
				e.Message = fmt.Sprintf("console of %q: HTTP %d: %s", guest, resp.StatusCode, strings.TrimSpace(string(b)))
			}
			return nil, e
		}
		last = err
	}
	return nil, &Unreachable{Tried: c.Servers(), Last: fmt.Errorf("console: %w", last)}
}

// Read reads what the guest printed.
func (s *Console) Read(p []byte) (int, error) {
	for len(s.buf) == 0 {
		_, msg, err := s.ws.ReadMessage()
		if err != nil {
			if websocket.IsCloseError(err, websocket.CloseNormalClosure) {
				return 0, io.EOF
			}
			return 0, err
		}
		s.buf = msg
	}
	n := copy(p, s.buf)
	s.buf = s.buf[n:]
	return n, nil
}

// Write types p on the console.
func (s *Console) Write(p []byte) (int, error) {
	if err := s.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close ends the session.
func (s *Console) Close() error {
	s.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	return s.ws.Close()
}
