package libvirt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// libvirtd's own connection between hosts: with peer-to-peer migration the
// source libvirtd connects to the target's with the target's migration URI.
// Haven lays the cluster's certificates out for libvirt's TLS transport
// (WritePKI) and, when the host's libvirtd.conf serves TLS with them, the
// host's migration URI is qemu+tls (TLSURI); otherwise qemu+tcp.

// DefaultPKIDir is where the agent keeps libvirt's TLS transport
// certificates unless told otherwise.
const DefaultPKIDir = "/etc/libvirt/haven-pki"

// Defaults of libvirtd.conf's TLS settings.
const (
	defaultTLSPort  = "16514"
	defaultCAFile   = "/etc/pki/CA/cacert.pem"
	defaultCRLFile  = "/etc/pki/CA/cacrl.pem"
	defaultCertFile = "/etc/pki/libvirt/servercert.pem"
	defaultKeyFile  = "/etc/pki/libvirt/private/serverkey.pem"
)

// LibvirtdConf is what Haven reads of libvirtd.conf: whether and where it
// serves TLS, and with which credentials.
type LibvirtdConf struct {
	ListenTLS                 bool // listen_tls (default on; libvirtd started with --listen)
	TLSPort                   string
	CAFile, CertFile, KeyFile string
	// CRLFile is crl_file: libvirtd reads it at its start when ca_file,
	// cert_file or key_file is set (else the default path).
	CRLFile string
}

// ReadLibvirtdConf reads libvirtd.conf at path.
func ReadLibvirtdConf(path string) (LibvirtdConf, error) {
	vals, err := readConf(path, "libvirtd.conf")
	if err != nil {
		return LibvirtdConf{}, err
	}
	or := func(k, def string) string {
		if v := vals[k]; v != "" {
			return v
		}
		return def
	}
	return LibvirtdConf{
		ListenTLS: or("listen_tls", "1") != "0",
		TLSPort:   or("tls_port", defaultTLSPort),
		CAFile:    filepath.Clean(or("ca_file", defaultCAFile)),
		CertFile:  filepath.Clean(or("cert_file", defaultCertFile)),
		KeyFile:   filepath.Clean(or("key_file", defaultKeyFile)),
		CRLFile:   cleanOrEmpty(vals["crl_file"]),
	}, nil
}

// PKI file names in a pkipath directory (libvirt's client reads cacert.pem,
// clientcert.pem and clientkey.pem there; libvirtd.conf names the server's).
const (
	pkiCA         = "cacert.pem"
	pkiClientCert = "clientcert.pem"
	pkiClientKey  = "clientkey.pem"
	pkiServerCert = "servercert.pem"
	pkiServerKey  = "serverkey.pem"
	pkiCRL        = "cacrl.pem"
)

func cleanOrEmpty(p string) string {
	if p == "" {
		return ""
	}
	return filepath.Clean(p)
}

// ReadsCRL reports whether libvirtd reads, at its start, the revocation
// list WritePKI lays out in dir (crl_file names it, or a symlink to it).
func (c LibvirtdConf) ReadsCRL(dir string) bool {
	return c.CRLFile != "" && resolvesTo(c.CRLFile, filepath.Join(filepath.Clean(dir), pkiCRL))
}

// UsesPKI reports whether libvirtd serves TLS with the certificates
// WritePKI lays out in dir (libvirtd.conf names them, or symlinks to them).
func (c LibvirtdConf) UsesPKI(dir string) bool {
	dir = filepath.Clean(dir)
	return c.ListenTLS && resolvesTo(c.CAFile, filepath.Join(dir, pkiCA)) &&
		resolvesTo(c.CertFile, filepath.Join(dir, pkiServerCert)) && resolvesTo(c.KeyFile, filepath.Join(dir, pkiServerKey))
}

// resolvesTo reports whether path is target, or a symlink (or a chain of
// them, at most 8) to it; target need not exist yet.
func resolvesTo(path, target string) bool {
	p := filepath.Clean(path)
	for range 9 {
		if p == target {
			return true
		}
		l, err := os.Readlink(p)
		if err != nil {
			return false
		}
		if !filepath.IsAbs(l) {
			l = filepath.Join(filepath.Dir(p), l)
		}
		p = filepath.Clean(l)
	}
	return false
}

// libvirt's server-update-tls (virt-admin) loads the server's certificates
// and revocation list again only from libvirt's default paths, whatever
// libvirtd.conf's ca_file, crl_file, cert_file and key_file say (libvirt 9.0,
// virNetTLSContextReloadForServer): those are made symlinks to the
// agent's files (linkDefaults) so that a renewal or a CA rotation reaches
// libvirtd without a restart.
var reloadPaths = [][2]string{{defaultCAFile, pkiCA}, {defaultCRLFile, pkiCRL}, {defaultCertFile, pkiServerCert}, {defaultKeyFile, pkiServerKey}}

// linkDefaults makes libvirt's default server certificate paths (under
// root, "" but in tests) symlinks to dir's files where nothing is yet; a
// path that holds something else is left alone and named in the error.
func linkDefaults(root, dir string) error {
	for _, r := range reloadPaths {
		path, target := filepath.Join(root, r[0]), filepath.Join(filepath.Clean(dir), r[1])
		if resolvesTo(path, target) {
			continue
		}
		if _, err := os.Lstat(path); err == nil {
			return fmt.Errorf("%s is not the agent's %s (virt-admin server-update-tls reloads libvirtd's certificates only from there): make it a symlink to it, or restart libvirtd after every renewal and CA rotation", r[0], target)
		}
		mode := os.FileMode(0o755)
		if filepath.Base(filepath.Dir(path)) == "private" {
			mode = 0o700
		}
		if err := os.MkdirAll(filepath.Dir(path), mode); err != nil {
			return fmt.Errorf("link libvirt's default certificate paths: %w", err)
		}
		if err := os.Symlink(target, path); err != nil {
			return fmt.Errorf("link libvirt's default certificate paths: %w", err)
		}
	}
	return nil
}

// WritePKI lays out the cluster's trust bundle and this host's
// certificate and key (ca, cert and key are files) in dir, root's only, for
// libvirt's TLS transport: as client (the URI's pkipath) and as server
// (libvirtd.conf's ca_file, cert_file, key_file). The host's certificate
// is valid for both. crl, when set and the file exists, is the list of
// revoked certificates signed by the cluster CA (PEM): cacrl.pem, which
// libvirtd reads as crl_file (a client reads it in the pkipath too). Each
// file is replaced atomically.
func WritePKI(dir, ca, cert, key, crl string) error {
	_, err := writePKI(dir, ca, cert, key, crl)
	return err
}

// writePKI is WritePKI, reporting whether a file libvirtd serves with
// (CA, revocation list, server certificate or key) changed.
func writePKI(dir, ca, cert, key, crl string) (bool, error) {
	changed := false
	fail := func(err error) (bool, error) { return changed, fmt.Errorf("libvirt TLS certificates: %w", err) }
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fail(err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fail(err)
	}
	files := map[string]string{pkiCA: ca, pkiClientCert: cert, pkiClientKey: key, pkiServerCert: cert, pkiServerKey: key}
	if crl != "" {
		files[pkiCRL] = crl
	}
	for name, src := range files {
		b, err := os.ReadFile(src)
		if name == pkiCRL && errors.Is(err, fs.ErrNotExist) {
			continue // not signed yet: the agent has not opened the CA key
		}
		if err != nil {
			return fail(err)
		}
		path := filepath.Join(dir, name)
		if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, b) {
			continue
		}
		if name != pkiClientCert && name != pkiClientKey {
			changed = true
		}
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, b, 0o600); err != nil {
			return fail(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			return fail(err)
		}
	}
	return changed, nil
}

// reloadLibvirtdTLS has the libvirtd of socket (its read-write socket; the
// admin socket is next to it) load its TLS certificates again:
// virt-admin server-update-tls, libvirt's way to take a renewed
// certificate or a new CA without a restart.
func reloadLibvirtdTLS(ctx context.Context, virtAdmin, socket string) error {
	admin := filepath.Join(filepath.Dir(socket), "libvirt-admin-sock")
	out, err := exec.CommandContext(ctx, virtAdmin, "-c", "libvirtd:///system?socket="+admin, "server-update-tls", "libvirtd").CombinedOutput()
	if err != nil {
		return fmt.Errorf("libvirtd's TLS certificates not reloaded (%s server-update-tls libvirtd): %w: %s", virtAdmin, err, bytes.TrimSpace(out))
	}
	return nil
}

// TLSURI is the qemu+tls URI of the libvirtd at host, listening on port,
// that a peer's libvirtd reaches with the client certificates of dir.
func TLSURI(host, port, dir string) string {
	dir = filepath.Clean(dir)
	q := "pkipath=" + dir
	if strings.ContainsFunc(dir, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-", r))
	}) {
		q = "pkipath=" + url.QueryEscape(dir)
	}
	u := url.URL{Scheme: "qemu+tls", Host: host, Path: "/system", RawQuery: q}
	if port != "" && port != defaultTLSPort {
		u.Host = net.JoinHostPort(host, port)
	} else if ip := net.ParseIP(host); ip != nil && ip.To4() == nil {
		u.Host = "[" + host + "]"
	}
	return u.String()
}
