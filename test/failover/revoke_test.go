package failover

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/api/client"
	"github.com/haven-ha/haven/internal/hypervisor/libvirt/libvirtd"
)

// (h) A removed host's certificate no longer opens the other hosts'
// libvirtd (libvirt only: root-equivalent control of their guests). Before
// the removal h3's certificate opens h1's and h2's libvirtd over qemu+tls;
// after h3 shut down and `haven node remove h3`, each refuses it (the
// agents signed a revocation list with the cluster CA, which libvirtd's
// GnuTLS accepts, and had libvirtd load it), and the hosts' own
// certificates still work both ways.
func TestRemovedHostRefusedByLibvirtd(t *testing.T) {
	eachHypervisor(t, func(t *testing.T, hv string) {
		if hv != "libvirt" {
			t.Skip("only libvirt's daemons take the cluster's certificates from outside the agent")
		}
		c := newCluster(t, options{hypervisor: hv})
		h3 := c.node("h3")
		// h3's client certificate and key, as a removed host (or whoever
		// took its disk) keeps them.
		old := t.TempDir()
		if out, err := h3.h.Shell(c.ctx, "cp "+libvirtd.PKIPath+"/cacert.pem "+libvirtd.PKIPath+"/clientcert.pem "+libvirtd.PKIPath+"/clientkey.pem "+old); err != nil {
			t.Fatalf("copy h3's certificates: %v: %s", err, out)
		}
		targets := []*node{c.node("h1"), c.node("h2")}
		withOld := func(to *node) (string, error) {
			uri := "qemu+tls://" + to.h.Addr.String() + "/system?pkipath=" + old
			other := targets[0]
			if other == to {
				other = targets[1]
			}
			out, err := other.h.Shell(c.ctx, "virsh -c '"+uri+"' hostname 2>&1")
			return strings.TrimSpace(out), err
		}
		for _, to := range targets {
			if out, err := withOld(to); err != nil || out != to.name {
				t.Fatalf("h3's certificate before its removal, to %s: %q, %v; want %s's host name", to.name, out, err, to.name)
			}
		}

		if err := c.bed.Shutdown(c.ctx, "h3"); err != nil {
			t.Fatal(err)
		}
		c.waitHostState("h3", api.HostOffline, 60*time.Second)
		t0 := time.Now()
		c.api(func(ctx context.Context, cl *client.Client) error { return cl.RemoveNode(ctx, "h3") })
		// A handshake while libvirtd reloads its certificates may fail
		// otherwise ("No supported cipher suites"): the refusal counted is
		// the one libvirtd logs as a revoked certificate, and it lasts.
		revokedLogged := func(to *node) bool {
			_, err := to.h.Shell(c.ctx, "grep -q 'The certificate has been revoked' /var/log/libvirt/libvirtd.log")
			return err == nil
		}
		for _, to := range targets {
			var out string
			c.poll("h3's certificate refused by "+to.name+"'s libvirtd as revoked", 60*time.Second, func() bool {
				var err error
				out, err = withOld(to)
				return err != nil && revokedLogged(to)
			})
			t.Logf("%s's libvirtd refuses the removed h3's certificate as revoked %v after the removal: %s", to.name, time.Since(t0).Round(100*time.Millisecond), out)
			if out, err := withOld(to); err == nil {
				t.Errorf("h3's certificate opens %s's libvirtd again: %q", to.name, out)
			}
		}
		// The remaining hosts' own certificates still open each other's.
		c.libvirtControlTLS()
	})
}
