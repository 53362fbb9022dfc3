// Package sdnotify speaks systemd's service notification protocol
// (sd_notify(3)): a datagram such as "READY=1" sent to the unix socket named
// by $NOTIFY_SOCKET, and the watchdog keep-alive asked for by
// $WATCHDOG_USEC. Without those variables (no systemd, or a unit that is not
// Type=notify) every call does nothing.
package sdnotify

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
)

// Messages of the protocol.
const (
	Ready     = "READY=1"
	Stopping  = "STOPPING=1"
	Reloading = "RELOADING=1"
	Watchdog  = "WATCHDOG=1"
)

// Notifier sends notifications to the socket it was made with.
type Notifier struct {
	socket   string
	watchdog time.Duration
}

// FromEnv reads $NOTIFY_SOCKET, $WATCHDOG_USEC and $WATCHDOG_PID (the
// watchdog is ours only when WATCHDOG_PID is unset or our pid).
func FromEnv(getenv func(string) string) *Notifier {
	n := &Notifier{socket: getenv("NOTIFY_SOCKET")}
	if us, err := strconv.ParseInt(getenv("WATCHDOG_USEC"), 10, 64); err == nil && us > 0 {
		pid := getenv("WATCHDOG_PID")
		if pid == "" || pid == strconv.Itoa(os.Getpid()) {
			n.watchdog = time.Duration(us) * time.Microsecond
		}
	}
	return n
}

// Enabled reports whether a service manager listens.
func (n *Notifier) Enabled() bool { return n != nil && n.socket != "" }

// WatchdogInterval is the watchdog timeout systemd enforces, or 0.
func (n *Notifier) WatchdogInterval() time.Duration {
	if !n.Enabled() {
		return 0
	}
	return n.watchdog
}

// Notify sends state lines (such as Ready, or "STATUS=...") in one datagram.
func (n *Notifier) Notify(state ...string) error {
	if !n.Enabled() {
		return nil
	}
	addr := &net.UnixAddr{Name: n.socket, Net: "unixgram"}
	if addr.Name[0] == '@' {
		addr.Name = "\x00" + addr.Name[1:] // abstract namespace
	}
	conn, err := net.DialUnix("unixgram", nil, addr)
	if err != nil {
		return fmt.Errorf("sd_notify to %s: %w", n.socket, err)
	}
	defer conn.Close()
	msg := ""
	for _, s := range state {
		msg += s + "\n"
	}
	if _, err := conn.Write([]byte(msg)); err != nil {
		return fmt.Errorf("sd_notify to %s: %w", n.socket, err)
	}
	return nil
}

// RunWatchdog sends WATCHDOG=1 at half the watchdog interval for as long as
// healthy says yes, until ctx ends. A failing check withholds the
// keep-alive, so systemd restarts a stuck agent (guests keep running: they
// live outside the agent's cgroup). Without a watchdog it returns at once.
func (n *Notifier) RunWatchdog(ctx context.Context, healthy func(context.Context) error, onUnhealthy func(error)) {
	iv := n.WatchdogInterval()
	if iv <= 0 {
		return
	}
	t := time.NewTicker(iv / 2)
	defer t.Stop()
	for {
		hctx, cancel := context.WithTimeout(ctx, iv/2)
		err := healthy(hctx)
		cancel()
		if err == nil {
			_ = n.Notify(Watchdog)
		} else if onUnhealthy != nil && ctx.Err() == nil {
			onUnhealthy(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
