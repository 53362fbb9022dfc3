// Package libvirtd owns what it takes to run a private libvirt daemon beside
// the machine's own: the configuration files of a libvirtd and virtlogd that
// run in a mount namespace of their own (private /etc/libvirt, /run/libvirt,
// /var/lib/libvirt, /var/log/libvirt, /var/cache/libvirt and /etc/pki
// bind-mounted over the real ones), a cache of probed QEMU capabilities shared between such
// daemons, and a subreaper for the qemu processes libvirtd orphans.
//
// The libvirt test harness (libvirttest) and the test bed (internal/testbed)
// run their libvirt hosts with it. Production hosts use their distribution's
// libvirtd and never this package.
package libvirtd

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/haven-ha/haven/internal/pki"
)

// Dir is one directory a private libvirtd gets: Sub, a directory of the
// daemon's own, is bind-mounted over Path inside its mount namespace.
type Dir struct {
	Sub  string
	Path string
}

// Dirs are the directories of a private libvirtd, in mount order.
var Dirs = []Dir{
	{"etc", "/etc/libvirt"},
	{"run", "/run/libvirt"},
	{"lib", "/var/lib/libvirt"},
	{"log", "/var/log/libvirt"},
	{"cache", "/var/cache/libvirt"},
	// libvirt's default TLS certificate paths, which the Haven agent links
	// to its own files (virt-admin server-update-tls reads only these).
	{"pki", "/etc/pki"},
}

// Socket is the read-write socket of a private libvirtd, relative to its run
// directory (Path /run/libvirt inside its namespace).
const Socket = "libvirt-sock"

// PIDFile is where the daemon writes its pid, inside its namespace. The
// default (/run/libvirtd.pid) is outside the private directories: two
// daemons would fight over its lock.
const PIDFile = "/run/libvirt/libvirtd.pid"

// VirtlogdPIDFile is virtlogd's pid file inside the namespace.
const VirtlogdPIDFile = "/run/libvirt/virtlogd.pid"

// QEMUUser and QEMUGroup are who a private daemon's QEMU runs as: Debian's
// libvirt user (libvirt-daemon-system makes it), never root. libvirt gives
// it the guest's disks, kernel and initrd (dynamic ownership), and QEMU
// runs under its seccomp sandbox.
const (
	QEMUUser  = "libvirt-qemu"
	QEMUGroup = "kvm"
)

// MigrateTLSSub is the directory, in the daemon's etc, of its migration TLS
// credentials (Config.MigrateTLS).
const MigrateTLSSub = "haven-tls"

// MigrateTLSPath is MigrateTLSSub as the daemon (and processes in its mount
// namespace) see it.
const MigrateTLSPath = "/etc/libvirt/" + MigrateTLSSub

// PKISub is the directory, in the daemon's etc, of the certificates of
// libvirt's TLS transport (Config.ListenTLS): the Haven agent's
// --libvirt-pki-dir, whose default is PKIPath.
const PKISub = "haven-pki"

// PKIPath is PKISub as the daemon (and processes in its mount namespace)
// see it.
const PKIPath = "/etc/libvirt/" + PKISub

// The files of PKIPath libvirtd serves with (the agent writes these names).
const (
	pkiCA         = "cacert.pem"
	pkiServerCert = "servercert.pem"
	pkiServerKey  = "serverkey.pem"
	pkiCRL        = "cacrl.pem" // written once the agent signed one
)

// Config is what differs between private daemons.
type Config struct {
	// UUID is the host UUID libvirt reports; two hosts that migrate between
	// each other need different ones (the machine's would be shared).
	UUID string
	// ListenAddr, when set, makes libvirtd listen on TCP there without
	// authentication (start it with --listen), and qemu take incoming
	// migrations there: peer-to-peer migration between namespace hosts.
	ListenAddr string
	// ListenTLS makes libvirtd listen on ListenAddr with TLS only (port
	// 16514, no plain TCP), with the certificates the Haven agent writes in
	// PKIPath; a client must present one its CA signed. Until an agent
	// wrote them, Prepare leaves a placeholder of the daemon's own there
	// (libvirtd does not start without them) that no peer trusts; the
	// agent has libvirtd load its own (virt-admin server-update-tls).
	ListenTLS bool
	// Debug logs the qemu driver at debug level.
	Debug bool
	// MigrateTLS makes the daemon's QEMU read live migration TLS
	// credentials from MigrateTLSPath (qemu.conf's
	// migrate_tls_x509_cert_dir), which the Haven driver fills.
	MigrateTLS bool
}

// HostUUID makes a UUID unique to this process, the host name and the
// moment, for Config.UUID.
func HostUUID(name string, nanos int64) string {
	var h uint32 = 2166136261
	for _, c := range []byte(name) {
		h = (h ^ uint32(c)) * 16777619
	}
	return fmt.Sprintf("%08x-%04x-4000-8000-%012x", uint32(os.Getpid()), h&0xffff, uint64(nanos)&0xffffffffffff)
}

// Files returns the configuration files of a private daemon, by name, to
// write in its etc directory (seen as /etc/libvirt): libvirtd.conf,
// qemu.conf, virtlogd.conf and libvirt.conf. QEMU runs as QEMUUser under
// seccomp, with no MAC security driver, cgroups or namespaces of its own:
// the daemon shares one kernel with its peers and the machine.
func Files(c Config) map[string]string {
	conf := fmt.Sprintf(`# written by haven (internal/hypervisor/libvirt/libvirtd)
host_uuid = %q
unix_sock_group = "root"
unix_sock_rw_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
listen_tls = 0
keepalive_interval = -1
`, c.UUID)
	if c.Debug {
		conf += "log_filters = \"1:qemu 3:util.netdev\"\nlog_outputs = \"1:file:/var/log/libvirt/libvirtd.log\"\n"
	} else {
		conf += "log_outputs = \"3:file:/var/log/libvirt/libvirtd.log\"\n"
	}
	qemu := fmt.Sprintf(`# written by haven (internal/hypervisor/libvirt/libvirtd)
user = %q
group = %q
dynamic_ownership = 1
remember_owner = 0
seccomp_sandbox = 1
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
`, QEMUUser, QEMUGroup)
	if c.MigrateTLS {
		qemu += fmt.Sprintf("migrate_tls_x509_cert_dir = %q\nmigrate_tls_x509_verify = 1\n", MigrateTLSPath)
	}
	switch {
	case c.ListenAddr != "" && c.ListenTLS:
		conf = strings.Replace(conf, "listen_tls = 0\n", "", 1)
		conf += fmt.Sprintf("listen_tls = 1\nlisten_tcp = 0\nlisten_addr = %q\nauth_tls = \"none\"\nca_file = %q\ncrl_file = %q\ncert_file = %q\nkey_file = %q\n",
			c.ListenAddr, filepath.Join(PKIPath, pkiCA), filepath.Join(PKIPath, pkiCRL), filepath.Join(PKIPath, pkiServerCert), filepath.Join(PKIPath, pkiServerKey))
	case c.ListenAddr != "":
		conf += fmt.Sprintf("listen_tcp = 1\nlisten_addr = %q\nauth_tcp = \"none\"\n", c.ListenAddr)
	}
	if c.ListenAddr != "" {
		qemu += fmt.Sprintf("migration_address = %q\nmigration_host = %q\n", c.ListenAddr, c.ListenAddr)
	}
	return map[string]string{
		"libvirtd.conf": conf,
		"qemu.conf":     qemu,
		"virtlogd.conf": "log_outputs = \"3:file:/var/log/libvirt/virtlogd.log\"\n",
		"libvirt.conf":  "uri_default = \"qemu:///system\"\n",
	}
}

// Prepare creates the daemon's directories under root (root/etc, root/run,
// ... as Dirs name them), writes its configuration files and seeds its
// capabilities cache. It keeps what a previous daemon left in lib, log and
// cache, as a host's disk would, and empties run, as a reboot would.
func Prepare(root string, c Config) error {
	for _, d := range Dirs {
		if err := os.MkdirAll(filepath.Join(root, d.Sub), 0o755); err != nil {
			return fmt.Errorf("prepare libvirtd directories: %w", err)
		}
	}
	run := filepath.Join(root, "run")
	entries, err := os.ReadDir(run)
	if err != nil {
		return fmt.Errorf("prepare libvirtd directories: %w", err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(run, e.Name())); err != nil {
			return fmt.Errorf("prepare libvirtd: empty its run directory: %w", err)
		}
	}
	for name, body := range Files(c) {
		if err := os.WriteFile(filepath.Join(root, "etc", name), []byte(body), 0o644); err != nil {
			return fmt.Errorf("prepare libvirtd: write %s: %w", name, err)
		}
	}
	if c.MigrateTLS {
		// libvirtd refuses to start with a certificate directory missing;
		// the driver fills it.
		if err := os.MkdirAll(filepath.Join(root, "etc", MigrateTLSSub), 0o750); err != nil {
			return fmt.Errorf("prepare libvirtd: %w", err)
		}
	}
	if c.ListenAddr != "" && c.ListenTLS {
		if err := placeholderPKI(filepath.Join(root, "etc", PKISub), c.ListenAddr); err != nil {
			return fmt.Errorf("prepare libvirtd: %w", err)
		}
	}
	SeedCapabilities(filepath.Join(root, "cache"))
	return nil
}

// placeholderPKI writes a CA of its own and a server certificate for addr
// in dir, unless an agent's files are there already (kept from an earlier
// boot of the host): libvirtd does not start listening with TLS without
// them, and its agent comes after it.
func placeholderPKI(dir, addr string) error {
	if _, err := os.Stat(filepath.Join(dir, pkiServerKey)); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ca, err := pki.NewCA("placeholder", time.Now())
	if err != nil {
		return err
	}
	cert, key, err := ca.IssueNode("placeholder", []string{addr}, time.Now())
	if err != nil {
		return err
	}
	for name, b := range map[string][]byte{pkiCA: ca.CertPEM, pkiServerCert: cert, pkiServerKey: key} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// MountScript is the sh commands that bind-mount root's directories over
// their paths (inside a private mount namespace), each followed by " && ".
func MountScript(root string) string {
	var b strings.Builder
	for _, d := range Dirs {
		fmt.Fprintf(&b, "mkdir -p %s && mount --bind %s %s && ", d.Path, filepath.Join(root, d.Sub), d.Path)
	}
	return b.String()
}

// CapabilitiesCache is where the probed QEMU capabilities of private
// daemons are kept between them: a fresh libvirtd otherwise spends seconds
// probing qemu before its first guest starts (libvirt checks a cached file
// against the qemu binary and itself, and probes again when it is stale).
func CapabilitiesCache() string {
	if d := os.Getenv("HAVEN_LIBVIRTTEST_CACHE"); d != "" {
		return d
	}
	return "/var/cache/haven/libvirttest/qemu-capabilities"
}

// capsDir is where a daemon with cache directory cache keeps its QEMU
// capabilities.
func capsDir(cache string) string { return filepath.Join(cache, "qemu", "capabilities") }

// SeedCapabilities copies the shared cache into a daemon's cache directory
// (seen as /var/cache/libvirt), best effort.
func SeedCapabilities(cache string) { copyXML(CapabilitiesCache(), capsDir(cache)) }

// SaveCapabilities copies a daemon's probed capabilities to the shared
// cache, best effort; call it when the daemon has stopped.
func SaveCapabilities(cache string) { copyXML(capsDir(cache), CapabilitiesCache()) }

func copyXML(from, to string) {
	entries, err := os.ReadDir(from)
	if err != nil {
		return
	}
	if err := os.MkdirAll(to, 0o755); err != nil {
		return
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".xml") {
			copyFile(filepath.Join(from, e.Name()), filepath.Join(to, e.Name()))
		}
	}
}

// copyFile copies through a temporary file and a rename, so a concurrent
// reader never sees half a file.
func copyFile(src, dst string) {
	b, err := os.ReadFile(src)
	if err != nil {
		return
	}
	tmp := dst + ".tmp" + strconv.Itoa(os.Getpid())
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return
	}
	if err := os.Rename(tmp, dst); err != nil {
		_ = os.Remove(tmp)
	}
}
