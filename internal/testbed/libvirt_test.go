package testbed

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// virsh runs virsh against the host's libvirtd through its socket.
func virsh(t *testing.T, h *Host, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "virsh", append([]string{"-c", "qemu:///system?socket=" + h.LibvirtSocket()}, args...)...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// TestLibvirt boots a libvirtd in each of two hosts and checks that each is
// its own (host name, private directories), that power off kills it and
// power on plus StartLibvirt brings it back, and that LibvirtdKill and
// RestartLibvirtd work.
func TestLibvirt(t *testing.T) {
	if _, err := exec.LookPath("virsh"); err != nil {
		requireOrSkip(t, "virsh not installed (scripts/deps.sh installs libvirt-clients)")
	}
	if err := requireLibvirt(); err != nil {
		requireOrSkip(t, err.Error())
	}
	b := ForTest(t, Options{Hosts: 2})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	h1, h2 := b.MustHost("h1"), b.MustHost("h2")
	for _, h := range []*Host{h1, h2} {
		if err := h.StartLibvirt(ctx, false); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(h.SaveLibvirtCapabilities)
		name, err := virsh(t, h, "hostname")
		if err != nil || name != h.Name {
			t.Fatalf("libvirtd of %s says its host name is %q (%v), want %q", h.Name, name, err, h.Name)
		}
	}
	if err := h1.StartLibvirt(ctx, false); err == nil || !strings.Contains(err.Error(), "already runs") {
		t.Errorf("second StartLibvirt on h1: %v, want an 'already runs' error", err)
	}
	// Each daemon has its own /etc/libvirt: its config listens on its own
	// address.
	for _, h := range []*Host{h1, h2} {
		out, err := h.Shell(ctx, "grep listen_addr /etc/libvirt/libvirtd.conf")
		if err != nil || !strings.Contains(out, h.Addr.String()) {
			t.Errorf("%s's /etc/libvirt/libvirtd.conf: %q, %v; want listen_addr %s", h.Name, out, err, h.Addr)
		}
	}
	// Its peers reach it with TLS only: no plain TCP listener, and a
	// client whose CA it does not trust (h1's placeholder, until an agent
	// wrote the cluster's certificates) is refused at the handshake.
	tcp, err := h1.Shell(ctx, "virsh -c qemu+tcp://"+h2.Addr.String()+"/system hostname 2>&1")
	if err == nil || !strings.Contains(tcp, "Connection refused") {
		t.Errorf("qemu+tcp from h1 to h2: %q, %v; want the connection refused", tcp, err)
	}
	tls, err := h1.Shell(ctx, "virsh -c '"+h2.LibvirtURI()+"' hostname 2>&1")
	if err == nil || strings.Contains(tls, "Connection refused") || !strings.Contains(strings.ToLower(tls), "certificate") {
		t.Errorf("qemu+tls from h1 to h2 with h1's placeholder CA: %q, %v; want a certificate refused", tls, err)
	}

	if err := b.LibvirtdKill(ctx, "h2"); err != nil {
		t.Fatal(err)
	}
	if _, err := virsh(t, h2, "hostname"); err == nil {
		t.Error("h2's libvirtd still answers after LibvirtdKill")
	}
	if err := h2.RestartLibvirtd(ctx, false); err != nil {
		t.Fatal(err)
	}
	if name, err := virsh(t, h2, "hostname"); err != nil || name != "h2" {
		t.Errorf("h2's libvirtd after restart: %q, %v", name, err)
	}

	if err := b.PowerOff(ctx, "h1"); err != nil {
		t.Fatal(err)
	}
	for _, r := range h1.Processes() {
		t.Errorf("h1 powered off, yet %s (pid %d) runs", r.Role, r.PID)
	}
	if _, err := virsh(t, h1, "hostname"); err == nil {
		t.Error("h1's libvirtd answers while h1 is off")
	}
	if err := b.PowerOn(ctx, "h1"); err != nil {
		t.Fatal(err)
	}
	if err := h1.StartLibvirt(ctx, false); err != nil {
		t.Fatalf("libvirt after power on: %v", err)
	}
	if name, err := virsh(t, h1, "hostname"); err != nil || name != "h1" {
		t.Errorf("h1's libvirtd after power on: %q, %v", name, err)
	}
}

// requireOrSkip skips the test for want of a tool, or fails it when CI=true.
func requireOrSkip(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(why)
	}
	t.Skip(why)
}
