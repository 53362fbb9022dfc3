package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"
)

// qmpEvent is an asynchronous QMP event.
type qmpEvent struct {
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
}

type qmpError struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *qmpError) Error() string { return e.Class + ": " + e.Desc }

type qmpMessage struct {
	QMP    json.RawMessage `json:"QMP"`
	Event  string          `json:"event"`
	Data   json.RawMessage `json:"data"`
	ID     string          `json:"id"`
	Return json.RawMessage `json:"return"`
	Error  *qmpError       `json:"error"`
}

// errMonitorClosed means the QMP connection ended (QEMU exited or closed it).
var errMonitorClosed = errors.New("qmp monitor connection closed")

// monitor is one QMP connection. Commands may be issued concurrently; events
// go to onEvent from the reader goroutine, in order.
type monitor struct {
	conn    net.Conn
	onEvent func(qmpEvent)
	done    chan struct{} // closed when the connection ends

	mu      sync.Mutex // guards pending, nextID, writes
	pending map[string]chan qmpMessage
	nextID  int
}

// dialMonitor connects to a QMP unix socket, negotiates capabilities and
// starts reading. It gives up at ctx's deadline.
func dialMonitor(ctx context.Context, path string, onEvent func(qmpEvent)) (*monitor, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	r := bufio.NewReaderSize(conn, 64*1024)
	line, err := r.ReadBytes('\n')
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("read qmp greeting: %w", err)
	}
	var greet qmpMessage
	if err := json.Unmarshal(line, &greet); err != nil || greet.QMP == nil {
		conn.Close()
		return nil, fmt.Errorf("bad qmp greeting %q", line)
	}
	if _, err := conn.Write([]byte(`{"execute":"qmp_capabilities"}` + "\n")); err != nil {
		conn.Close()
		return nil, fmt.Errorf("qmp_capabilities: %w", err)
	}
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("qmp_capabilities: %w", err)
		}
		var m qmpMessage
		if json.Unmarshal(line, &m) != nil || m.Event != "" {
			continue
		}
		if m.Error != nil {
			conn.Close()
			return nil, fmt.Errorf("qmp_capabilities: %w", m.Error)
		}
		break
	}
	if !stop() {
		conn.Close()
		return nil, ctx.Err()
	}
	conn.SetDeadline(time.Time{})
	m := &monitor{conn: conn, onEvent: onEvent, done: make(chan struct{}), pending: map[string]chan qmpMessage{}}
	go m.read(r)
	return m, nil
}

func (m *monitor) read(r *bufio.Reader) {
	defer close(m.done)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			m.mu.Lock()
			for id, ch := range m.pending {
				close(ch)
				delete(m.pending, id)
			}
			m.mu.Unlock()
			return
		}
		var msg qmpMessage
		if json.Unmarshal(line, &msg) != nil {
			continue
		}
		if msg.Event != "" {
			if m.onEvent != nil {
				m.onEvent(qmpEvent{Event: msg.Event, Data: msg.Data})
			}
			continue
		}
		m.mu.Lock()
		ch, ok := m.pending[msg.ID]
		delete(m.pending, msg.ID)
		m.mu.Unlock()
		if ok {
			ch <- msg
		}
	}
}

// run executes a QMP command under ctx and decodes its return into out (when
// not nil).
func (m *monitor) run(ctx context.Context, cmd string, args, out any) error {
	req := struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
		ID        string `json:"id"`
	}{Execute: cmd, Arguments: args}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("qmp %s: %w", cmd, err)
	}
	ch := make(chan qmpMessage, 1)
	m.mu.Lock()
	select {
	case <-m.done:
		m.mu.Unlock()
		return fmt.Errorf("qmp %s: %w", cmd, errMonitorClosed)
	default:
	}
	m.nextID++
	req.ID = strconv.Itoa(m.nextID)
	m.pending[req.ID] = ch
	b, _ := json.Marshal(req)
	if dl, ok := ctx.Deadline(); ok {
		m.conn.SetWriteDeadline(dl)
	} else {
		m.conn.SetWriteDeadline(time.Time{})
	}
	_, err := m.conn.Write(append(b, '\n'))
	if err != nil {
		delete(m.pending, req.ID)
	}
	m.mu.Unlock()
	if err != nil {
		return fmt.Errorf("qmp %s: %w", cmd, err)
	}
	select {
	case msg, ok := <-ch:
		if !ok {
			return fmt.Errorf("qmp %s: %w", cmd, errMonitorClosed)
		}
		if msg.Error != nil {
			return fmt.Errorf("qmp %s: %w", cmd, msg.Error)
		}
		if out != nil && msg.Return != nil {
			if err := json.Unmarshal(msg.Return, out); err != nil {
				return fmt.Errorf("qmp %s: decode reply: %w", cmd, err)
			}
		}
		return nil
	case <-ctx.Done():
		m.mu.Lock()
		delete(m.pending, req.ID)
		m.mu.Unlock()
		return fmt.Errorf("qmp %s: %w", cmd, ctx.Err())
	}
}

func (m *monitor) close() error {
	err := m.conn.Close()
	<-m.done
	return err
}
