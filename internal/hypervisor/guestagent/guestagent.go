// Package guestagent speaks qemu-guest-agent's protocol (QGA): one JSON
// command per line over the guest's virtio-serial channel, answered by
// {"return": ...} or {"error": ...}. Drivers carry the commands (the QEMU
// driver over the channel's unix socket with Exchange, libvirt with its
// agent command call); the helpers here (Ping, Exec, Addresses) build on
// any Caller.
package guestagent

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"time"
)

// Caller sends one guest agent command (a JSON object with "execute" and
// optional "arguments") to a guest and returns its "return" value.
type Caller func(ctx context.Context, cmd []byte) (json.RawMessage, error)

// Error is an error answer of the guest agent.
type Error struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *Error) Error() string { return "guest agent: " + e.Class + ": " + e.Desc }

type response struct {
	Return json.RawMessage `json:"return"`
	Error  *Error          `json:"error"`
}

// Command builds a command's JSON.
func Command(execute string, args any) []byte {
	m := map[string]any{"execute": execute}
	if args != nil {
		m["arguments"] = args
	}
	b, _ := json.Marshal(m)
	return b
}

// Decode reads one answer: its return value, or its error.
func Decode(line []byte) (json.RawMessage, error) {
	var r response
	if err := json.Unmarshal(line, &r); err != nil {
		return nil, fmt.Errorf("guest agent: unreadable answer %q: %w", truncate(string(line), 200), err)
	}
	if r.Error != nil {
		return nil, r.Error
	}
	if r.Return == nil {
		return nil, fmt.Errorf("guest agent: answer without return: %q", truncate(string(line), 200))
	}
	return r.Return, nil
}

// Exchange runs cmd over a fresh connection to the agent's channel: first a
// guest-sync with a random id, skipping whatever a previous caller left
// unread (an answer that came after its timeout), then cmd. The connection
// is closed when ctx ends, so a hung guest returns ctx's error.
func Exchange(ctx context.Context, conn net.Conn, cmd []byte) (json.RawMessage, error) {
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	wrap := func(err error) error {
		if ctx.Err() != nil {
			return fmt.Errorf("guest agent did not answer: %w", ctx.Err())
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("guest agent did not answer: %w", context.DeadlineExceeded)
		}
		return fmt.Errorf("guest agent channel: %w", err)
	}
	id := rand.Int64N(1 << 50)
	if _, err := conn.Write(append(Command("guest-sync", map[string]any{"id": id}), '\n')); err != nil {
		return nil, wrap(err)
	}
	r := bufio.NewReaderSize(conn, 64*1024)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return nil, wrap(err)
		}
		ret, derr := Decode(line)
		if derr != nil {
			continue // a stale answer
		}
		var got int64
		if json.Unmarshal(ret, &got) == nil && got == id {
			break
		}
	}
	if _, err := conn.Write(append(cmd, '\n')); err != nil {
		return nil, wrap(err)
	}
	line, err := r.ReadBytes('\n')
	if err != nil {
		return nil, wrap(err)
	}
	return Decode(line)
}

// Ping sends guest-ping.
func Ping(ctx context.Context, call Caller) error {
	_, err := call(ctx, Command("guest-ping", nil))
	return err
}

// ExecResult is how a command run by Exec ended.
type ExecResult struct {
	ExitCode int
	Signal   int
	Output   string // stdout then stderr, truncated
}

// Exec runs argv inside the guest (guest-exec) and waits for it until ctx
// ends, polling guest-exec-status.
func Exec(ctx context.Context, call Caller, argv []string) (ExecResult, error) {
	if len(argv) == 0 {
		return ExecResult{}, errors.New("guest exec: no program")
	}
	ret, err := call(ctx, Command("guest-exec", map[string]any{"path": argv[0], "arg": argv[1:], "capture-output": true}))
	if err != nil {
		return ExecResult{}, fmt.Errorf("guest exec %s: %w", argv[0], err)
	}
	var started struct {
		PID int `json:"pid"`
	}
	if err := json.Unmarshal(ret, &started); err != nil {
		return ExecResult{}, fmt.Errorf("guest exec %s: unreadable answer: %w", argv[0], err)
	}
	wait := 20 * time.Millisecond
	for {
		ret, err := call(ctx, Command("guest-exec-status", map[string]any{"pid": started.PID}))
		if err != nil {
			return ExecResult{}, fmt.Errorf("guest exec %s: status: %w", argv[0], err)
		}
		var st struct {
			Exited   bool   `json:"exited"`
			ExitCode int    `json:"exitcode"`
			Signal   int    `json:"signal"`
			OutData  string `json:"out-data"`
			ErrData  string `json:"err-data"`
		}
		if err := json.Unmarshal(ret, &st); err != nil {
			return ExecResult{}, fmt.Errorf("guest exec %s: unreadable status: %w", argv[0], err)
		}
		if st.Exited {
			out, _ := base64.StdEncoding.DecodeString(st.OutData)
			errOut, _ := base64.StdEncoding.DecodeString(st.ErrData)
			return ExecResult{ExitCode: st.ExitCode, Signal: st.Signal, Output: truncate(strings.TrimSpace(string(out)+string(errOut)), 500)}, nil
		}
		select {
		case <-ctx.Done():
			return ExecResult{}, fmt.Errorf("guest exec %s: still running: %w", argv[0], ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 200*time.Millisecond)
	}
}

// Addresses lists the guest's IP addresses (guest-network-get-interfaces),
// IPv4 first; the loopback interface and link-local addresses are left out.
func Addresses(ctx context.Context, call Caller) ([]string, error) {
	ret, err := call(ctx, Command("guest-network-get-interfaces", nil))
	if err != nil {
		return nil, err
	}
	var ifs []struct {
		Name  string `json:"name"`
		Addrs []struct {
			Type string `json:"ip-address-type"`
			Addr string `json:"ip-address"`
		} `json:"ip-addresses"`
	}
	if err := json.Unmarshal(ret, &ifs); err != nil {
		return nil, fmt.Errorf("guest agent: unreadable interfaces: %w", err)
	}
	var v4, v6 []string
	for _, i := range ifs {
		if i.Name == "lo" {
			continue
		}
		for _, a := range i.Addrs {
			ip := net.ParseIP(a.Addr)
			if ip == nil || ip.IsLinkLocalUnicast() {
				continue
			}
			if ip.To4() != nil {
				v4 = append(v4, a.Addr)
			} else {
				v6 = append(v6, a.Addr)
			}
		}
	}
	return append(v4, v6...), nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
