package guestagent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

// fakeQGA answers like qemu-guest-agent on one end of a pipe; before the
// sync answer it sends a stale answer left from an earlier caller.
func fakeQGA(t *testing.T, conn net.Conn, answer func(cmd string) string) {
	defer conn.Close()
	r := bufio.NewReader(conn)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return
		}
		var c struct {
			Execute string          `json:"execute"`
			Args    json.RawMessage `json:"arguments"`
		}
		if err := json.Unmarshal(line, &c); err != nil {
			t.Errorf("bad command %q", line)
			return
		}
		if c.Execute == "guest-sync" {
			var a struct {
				ID int64 `json:"id"`
			}
			json.Unmarshal(c.Args, &a)
			conn.Write([]byte(`{"return": {"pid": 7}}` + "\n"))
			b, _ := json.Marshal(map[string]any{"return": a.ID})
			conn.Write(append(b, '\n'))
			continue
		}
		conn.Write([]byte(answer(c.Execute) + "\n"))
	}
}

func TestExchange(t *testing.T) {
	a, b := net.Pipe()
	go fakeQGA(t, b, func(cmd string) string {
		if cmd == "guest-ping" {
			return `{"return": {}}`
		}
		return `{"error": {"class": "CommandNotFound", "desc": "no such command"}}`
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ret, err := Exchange(ctx, a, Command("guest-ping", nil))
	if err != nil || string(ret) != "{}" {
		t.Fatalf("ping: %s, %v", ret, err)
	}
	a.Close()

	a, b = net.Pipe()
	go fakeQGA(t, b, func(string) string { return `{"error": {"class": "CommandNotFound", "desc": "no such command"}}` })
	_, err = Exchange(ctx, a, Command("guest-frobnicate", nil))
	var ge *Error
	if !errors.As(err, &ge) || ge.Class != "CommandNotFound" {
		t.Fatalf("error answer: %v", err)
	}
	a.Close()
}

func TestExchangeHungGuest(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	go func() { bufio.NewReader(b).ReadBytes('\n') }() // reads, never answers
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := Exchange(ctx, a, Command("guest-ping", nil))
	if err == nil || !strings.Contains(err.Error(), "guest agent did not answer") {
		t.Fatalf("hung guest: %v", err)
	}
}

func TestAddressesAndExec(t *testing.T) {
	ifs := `[{"name":"lo","ip-addresses":[{"ip-address-type":"ipv4","ip-address":"127.0.0.1"}]},
{"name":"eth0","ip-addresses":[{"ip-address-type":"ipv6","ip-address":"fe80::1"},{"ip-address-type":"ipv6","ip-address":"2001:db8::5"},{"ip-address-type":"ipv4","ip-address":"10.0.0.5"}]}]`
	polls := 0
	call := func(ctx context.Context, cmd []byte) (json.RawMessage, error) {
		var c struct {
			Execute string `json:"execute"`
		}
		json.Unmarshal(cmd, &c)
		switch c.Execute {
		case "guest-network-get-interfaces":
			return json.RawMessage(ifs), nil
		case "guest-exec":
			if !strings.Contains(string(cmd), `"path":"/bin/sh"`) || !strings.Contains(string(cmd), `"arg":["-c","exit 3"]`) {
				t.Errorf("exec command %s", cmd)
			}
			return json.RawMessage(`{"pid":9}`), nil
		case "guest-exec-status":
			polls++
			if polls < 3 {
				return json.RawMessage(`{"exited":false}`), nil
			}
			return json.RawMessage(`{"exited":true,"exitcode":3,"out-data":"b2sK","err-data":"YmFkCg=="}`), nil
		}
		return nil, errors.New("unexpected " + c.Execute)
	}
	ctx := context.Background()
	addrs, err := Addresses(ctx, call)
	if err != nil || strings.Join(addrs, " ") != "10.0.0.5 2001:db8::5" {
		t.Errorf("addresses = %v, %v", addrs, err)
	}
	res, err := Exec(ctx, call, []string{"/bin/sh", "-c", "exit 3"})
	if err != nil || res.ExitCode != 3 || res.Output != "ok\nbad" {
		t.Errorf("exec = %+v, %v", res, err)
	}
}
