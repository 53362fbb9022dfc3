package ha

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/haven-ha/haven/internal/agent"
	"github.com/haven-ha/haven/internal/hypervisor"
	"github.com/haven-ha/haven/internal/hypervisor/libvirt"
	"github.com/haven-ha/haven/internal/hypervisor/qemu"
)

// HostOptions say how this host runs guests; they are `haven agent` flags.
type HostOptions struct {
	// RecordDir, when set, is where each manager term this agent serves
	// records its inputs (control.Daemon.RecordDir).
	RecordDir string
	// Hypervisor is qemu, libvirt, or none (a host that runs no guests).
	// Empty: the agent's --hypervisor.
	Hypervisor string
	// QEMUBinary is the emulator for the qemu driver.
	QEMUBinary string
	// QEMUUser is the unprivileged user QEMU drops to.
	QEMUUser string
	// NoMigrationTLS turns off TLS for live migrations (both drivers).
	NoMigrationTLS bool
	// LibvirtTLSDir is where the libvirt driver writes the cluster's
	// certificates for libvirt's QEMU; LibvirtQEMUConf is libvirt's
	// qemu.conf, whose migrate_tls_x509_cert_dir must name that directory
	// for migrations over TLS.
	LibvirtTLSDir, LibvirtQEMUConf string
	// MigrationAddr is the address incoming QEMU migrations listen on;
	// default: the host part of the agent's --listen address.
	MigrationAddr string
	// DiskCache is QEMU's cache= mode for guest disks.
	DiskCache string
	// LibvirtSocket and LibvirtURI reach the local libvirtd.
	LibvirtSocket string
	LibvirtURI    string
	// LibvirtMigrationURI is this host's libvirt URI as its peers reach it;
	// default qemu+tcp://HOST/system with HOST from --listen.
	LibvirtMigrationURI string
	// LibvirtPKIDir is where the agent lays the cluster's certificates out
	// for libvirt's TLS transport; LibvirtdConf is libvirtd.conf, which
	// must serve TLS with them for the default migration URI to be
	// qemu+tls.
	LibvirtPKIDir, LibvirtdConf string
	// LibvirtStrictStorage keeps libvirt's own filesystem-type test at
	// migration (libvirt.Config.StrictStorageCheck).
	LibvirtStrictStorage bool
	// WatchdogDevice is the watchdog armed in watchdog fencing mode while
	// guests run: a Linux watchdog device, or "file:PATH" for the test bed's
	// emulated one. Empty: none (the host then runs no guests in that mode).
	WatchdogDevice string
	// HealthNetworks are where guests' tcp and http health checks may
	// connect besides the guests' own addresses (health.Config.Networks).
	HealthNetworks Prefixes
	// GuestScope places each QEMU in a systemd scope of its own: auto (when
	// systemd runs the host), systemd or none (qemu.ParseScopeMode).
	GuestScope string
}

// RegisterFlags adds the host options to the agent's flag set.
func (o *HostOptions) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.RecordDir, "record", "", "record every input of each manager term this agent serves to DIR/term-TERM-NODE.jsonl (replay with haven sim replay FILE)")
	fs.StringVar(&o.GuestScope, "guest-scope", "auto", "qemu driver: run each QEMU in a systemd scope of its own, outside the agent's cgroup, so stopping or restarting the agent's unit never kills guests: auto (when systemd runs the host), systemd, or none")
	fs.StringVar(&o.QEMUBinary, "qemu-binary", "qemu-system-x86_64", "qemu driver: the QEMU system emulator")
	fs.StringVar(&o.QEMUUser, "qemu-user", qemu.DefaultUser, "qemu driver: the unprivileged user QEMU runs guests as (it must exist; \"-\": the agent's own user, only when the agent is not root)")
	fs.BoolVar(&o.NoMigrationTLS, "no-migration-tls", false, "migrate guests over plain TCP instead of TLS with the cluster's certificates (TLS is used whenever both ends offer it)")
	fs.StringVar(&o.MigrationAddr, "migration-addr", "", "qemu driver: address incoming live migrations listen on (default: the host of --listen)")
	fs.StringVar(&o.DiskCache, "disk-cache", "", "qemu driver: QEMU cache= mode for guest disks (none for shared storage with O_DIRECT)")
	fs.StringVar(&o.LibvirtSocket, "libvirt-socket", "/run/libvirt/libvirt-sock", "libvirt driver: libvirtd's unix socket")
	fs.StringVar(&o.LibvirtURI, "libvirt-uri", "qemu:///system", "libvirt driver: connection URI")
	fs.StringVar(&o.WatchdogDevice, "watchdog-device", "/dev/watchdog", "watchdog fencing: the watchdog armed while guests run (load softdog if the host has no hardware watchdog); empty for none")
	fs.BoolVar(&o.LibvirtStrictStorage, "libvirt-strict-storage", false, "libvirt driver: also let libvirt refuse live migrations of disks on filesystems it does not know as shared (NFS, GFS2, OCFS2, Ceph...); by default Haven's shared-pool check decides")
	fs.Var(&o.HealthNetworks, "health-network", "a network (CIDR) tcp and http health checks may connect to besides the guests' own addresses (reported by their guest agents, inside the subnets this host has on the guests' bridges), such as the subnet of guests without a guest agent; a cluster host's address only as a single address (/32, /128); repeat or separate with commas for several")
	fs.StringVar(&o.LibvirtTLSDir, "libvirt-tls-dir", libvirt.DefaultMigrationTLSDir, "libvirt driver: where the agent writes the cluster's certificates for libvirt's QEMU; live migrations use TLS when qemu.conf's migrate_tls_x509_cert_dir names this directory")
	fs.StringVar(&o.LibvirtQEMUConf, "libvirt-qemu-conf", "/etc/libvirt/qemu.conf", "libvirt driver: libvirt's qemu.conf (read for migrate_tls_x509_cert_dir and QEMU's group)")
	fs.StringVar(&o.LibvirtMigrationURI, "libvirt-migration-uri", "", "libvirt driver: this host's URI for peer-to-peer migration (default qemu+tls://HOST/system?pkipath=--libvirt-pki-dir when libvirtd.conf serves TLS with the certificates there, else qemu+tcp://HOST/system; HOST from --listen)")
	fs.StringVar(&o.LibvirtPKIDir, "libvirt-pki-dir", libvirt.DefaultPKIDir, "libvirt driver: where the agent writes the cluster's certificates for libvirt's TLS transport (cacert.pem, servercert.pem, serverkey.pem, clientcert.pem, clientkey.pem; root only); \"\" for none")
	fs.StringVar(&o.LibvirtdConf, "libvirtd-conf", "/etc/libvirt/libvirtd.conf", "libvirt driver: libvirtd's configuration (read for listen_tls, tls_port, ca_file, cert_file and key_file)")
}

// Driver returns the factory that opens the configured driver.
func (o HostOptions) Driver() DriverFactory {
	return func(ctx context.Context, a *agent.Agent) (hypervisor.Driver, error) {
		cfg := a.Config()
		kind := o.Hypervisor
		if kind == "" {
			kind = cfg.Hypervisor
		}
		host, _, err := net.SplitHostPort(cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("agent --listen %q: %w", cfg.Listen, err)
		}
		switch kind {
		case "none", "":
			return nil, nil
		case "qemu":
			if _, err := exec.LookPath(o.QEMUBinary); err != nil {
				return nil, fmt.Errorf("qemu driver: %s not found: install qemu-system-x86 or pass --hypervisor none for a host without guests", o.QEMUBinary)
			}
			addr := o.MigrationAddr
			if addr == "" {
				addr = host
			}
			scope, err := qemu.ParseScopeMode(o.GuestScope)
			if err != nil {
				return nil, err
			}
			var tlsCA, tlsCert, tlsKey, tlsCRL string
			if !o.NoMigrationTLS {
				tlsCA, tlsCert, tlsKey = a.TLSFiles()
				tlsCRL = a.CACRLFile()
			}
			return qemu.New(ctx, qemu.Config{
				RunDir:        filepath.Join(a.DataDir(), "qemu"),
				Node:          a.Node(),
				Binary:        o.QEMUBinary,
				MigrationAddr: addr,
				DiskCache:     o.DiskCache,
				User:          o.QEMUUser,
				Scope:         scope,
				TLSCA:         tlsCA,
				TLSCert:       tlsCert,
				TLSKey:        tlsKey,
				TLSCRL:        tlsCRL,
				Logger:        cfg.Logger,
			})
		case "libvirt":
			lc := libvirt.Config{Socket: o.LibvirtSocket, URI: o.LibvirtURI, MigrationURI: o.LibvirtMigrationURI, Node: a.Node(), StrictStorageCheck: o.LibvirtStrictStorage, Logger: cfg.Logger}
			o.libvirtControl(a, host, &lc)
			if !o.NoMigrationTLS {
				o.libvirtTLS(a, &lc)
			}
			d, err := libvirt.New(ctx, lc)
			if err != nil {
				return nil, err
			}
			if lc.PKIDir != "" {
				// A host removed: libvirtd loads the new revocation list.
				// A reload that failed (libvirtd dropped virt-admin's
				// connection, seen on the test bed) is tried again within
				// seconds, not at the next change: until it takes, the
				// removed host's certificate still opens this libvirtd.
				refresh := func() {
					rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					defer cancel()
					if err := d.RefreshPKI(rctx); err != nil {
						cfg.Logger.Warn("libvirt's TLS transport certificates", "err", err)
					}
				}
				var retrying atomic.Bool
				a.OnCACRL(func() {
					refresh()
					if !d.PKIStale() || !retrying.CompareAndSwap(false, true) {
						return
					}
					go func() {
						defer retrying.Store(false)
						for wait := time.Second; wait <= 16*time.Second && d.PKIStale(); wait *= 2 {
							time.Sleep(wait)
							refresh()
						}
					}()
				})
			}
			return d, nil
		}
		return nil, fmt.Errorf("unknown --hypervisor %q: use qemu, libvirt or none", kind)
	}
}

// libvirtControl lays the cluster's certificates out for libvirt's TLS
// transport and picks the host's migration URI, unless given: qemu+tls
// when libvirtd serves TLS with those certificates, else qemu+tcp (and a
// warning saying what to set).
func (o HostOptions) libvirtControl(a *agent.Agent, host string, lc *libvirt.Config) {
	log := a.Config().Logger
	// The driver writes the files (and again before each migration).
	lc.TLSCA, lc.TLSCert, lc.TLSKey = a.TLSFiles()
	lc.PKIDir = o.LibvirtPKIDir
	lc.TLSCRL = a.CACRLFile()
	if lc.MigrationURI != "" {
		return
	}
	lc.MigrationURI = "qemu+tcp://" + host + "/system"
	conf, err := libvirt.ReadLibvirtdConf(o.LibvirtdConf)
	switch {
	case lc.PKIDir == "":
	case err != nil:
		log.Warn("libvirtd's connections to its peers without TLS", "err", err)
	case !conf.UsesPKI(lc.PKIDir):
		log.Warn("libvirtd's connections to its peers without TLS (qemu+tcp): to use the cluster's certificates set listen_tls = 1, ca_file, cert_file and key_file in libvirtd.conf to the files of --libvirt-pki-dir and restart libvirtd",
			"libvirtd.conf", o.LibvirtdConf, "libvirt-pki-dir", lc.PKIDir, "ca_file", conf.CAFile, "cert_file", conf.CertFile, "key_file", conf.KeyFile, "listen_tls", conf.ListenTLS)
	default:
		lc.MigrationURI = libvirt.TLSURI(host, conf.TLSPort, lc.PKIDir)
		if !conf.ReadsCRL(lc.PKIDir) {
			log.Warn("libvirtd reads the revocation list of removed hosts only once the agent has it reload its certificates: set crl_file in libvirtd.conf to cacrl.pem of --libvirt-pki-dir, so that it reads it at its start too",
				"libvirtd.conf", o.LibvirtdConf, "crl_file", conf.CRLFile, "libvirt-pki-dir", lc.PKIDir)
		}
	}
	log.Info("libvirt migration URI", "uri", lc.MigrationURI)
}

// libvirtTLS turns on the libvirt driver's migration TLS when libvirt's
// QEMU reads its credentials from --libvirt-tls-dir; otherwise it says what
// to change and migrations stay plain.
func (o HostOptions) libvirtTLS(a *agent.Agent, lc *libvirt.Config) {
	log := a.Config().Logger
	qc, err := libvirt.ReadQEMUConf(o.LibvirtQEMUConf)
	if err != nil {
		log.Warn("libvirt live migrations without TLS", "err", err)
		return
	}
	if qc.MigrateTLSDir != filepath.Clean(o.LibvirtTLSDir) {
		log.Warn("libvirt live migrations without TLS: libvirt's QEMU reads its migration certificates elsewhere; set migrate_tls_x509_cert_dir in qemu.conf to the agent's --libvirt-tls-dir and restart libvirtd",
			"qemu.conf", o.LibvirtQEMUConf, "migrate_tls_x509_cert_dir", qc.MigrateTLSDir, "libvirt-tls-dir", o.LibvirtTLSDir)
		return
	}
	lc.MigrationTLSDir, lc.TLSGroup = o.LibvirtTLSDir, qc.GID
}

// Prefixes is a list flag of networks (CIDR), repeated or comma-separated.
type Prefixes []netip.Prefix

func (p *Prefixes) String() string {
	var s []string
	for _, x := range *p {
		s = append(s, x.String())
	}
	return strings.Join(s, ",")
}

// Set adds the comma-separated networks of v.
func (p *Prefixes) Set(v string) error {
	for _, f := range strings.Split(v, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		x, err := netip.ParsePrefix(f)
		if err != nil {
			return fmt.Errorf("%q is not a network: give ADDRESS/BITS, such as 192.0.2.0/24", f)
		}
		if x != x.Masked() {
			return fmt.Errorf("%q has host bits set: did you mean %s?", f, x.Masked())
		}
		*p = append(*p, x)
	}
	return nil
}
