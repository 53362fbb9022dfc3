package testbed

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
)

// ErrRouteLeaves is wrapped by the errors of CheckRoutes and RouteStaysLocal
// when traffic to a test address would leave this machine.
var ErrRouteLeaves = errors.New("test address would leave this machine")

// CheckRoutes asks the root namespace (`ip route get ADDR`) where each of the
// bed's addresses goes and fails unless every one stays on this machine: on
// the bed's own leg, or unreachable. New runs it before returning a bed;
// anyone about to send traffic may run it again.
func (b *Bed) CheckRoutes(ctx context.Context) error {
	leg := ""
	if b.cfg.Leg {
		leg = b.LegDev()
	}
	legAddr, _ := b.LegAddr()
	for _, a := range b.Addrs() {
		out, err := exec.CommandContext(ctx, "ip", "route", "get", a.String()).CombinedOutput()
		if err != nil && ctx.Err() != nil {
			return ctx.Err()
		}
		if err := RouteStaysLocal(a, string(out), err != nil, leg, legAddr); err != nil {
			return fmt.Errorf("refusing to run test bed %s: %w", b.cfg.ID, err)
		}
	}
	return nil
}

// RouteStaysLocal decides from the output of `ip route get ADDR` (failed
// tells whether the command exited non-zero) whether traffic from the root
// namespace to addr stays on this machine. It does when the route is
// unreachable, blackhole or prohibit, when the command fails with "No route
// to host" or "Network is unreachable", when it goes straight out of leg
// (the bed's own leg device; "" for none), or when addr is the leg's own
// address legAddr. Anything else, above all a route through a gateway,
// is refused with an error wrapping ErrRouteLeaves.
func RouteStaysLocal(addr netip.Addr, out string, failed bool, leg string, legAddr netip.Addr) error {
	text := strings.TrimSpace(out)
	if failed {
		low := strings.ToLower(text)
		for _, ok := range []string{"no route to host", "network is unreachable", "unreachable", "prohibited"} {
			if strings.Contains(low, ok) {
				return nil
			}
		}
		return fmt.Errorf("%w: cannot tell where %s goes: `ip route get %s` failed: %s", ErrRouteLeaves, addr, addr, text)
	}
	line := text
	if i := strings.IndexByte(line, '\n'); i >= 0 {
		line = line[:i]
	}
	f := strings.Fields(line)
	if len(f) == 0 {
		return fmt.Errorf("%w: `ip route get %s` printed nothing", ErrRouteLeaves, addr)
	}
	switch f[0] {
	case "unreachable", "blackhole", "prohibit", "throw":
		return nil
	case "local":
		if legAddr.IsValid() && leg != "" && addr == legAddr {
			return nil
		}
		return fmt.Errorf("%w: %s is an address of this machine outside the bed (%q); pick another subnet or remove it", ErrRouteLeaves, addr, line)
	}
	var dev, via string
	for i := 0; i+1 < len(f); i++ {
		switch f[i] {
		case "dev":
			dev = f[i+1]
		case "via":
			via = f[i+1]
		}
	}
	if via != "" {
		return fmt.Errorf("%w: %s would go through gateway %s on %s (%q): the bed's subnet is not local; is its leg or unreachable route missing?", ErrRouteLeaves, addr, via, dev, line)
	}
	if leg == "" || dev != leg {
		want := "an unreachable route"
		if leg != "" {
			want = "device " + leg
		}
		return fmt.Errorf("%w: %s would go out of device %q, not %s (%q): another network on this machine overlaps the bed's subnet", ErrRouteLeaves, addr, dev, want, line)
	}
	return nil
}
