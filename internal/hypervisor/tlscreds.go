package hypervisor

import (
	"fmt"
	"os"
	"path/filepath"
)

// ffdhe2048 is the RFC 7919 2048-bit Diffie-Hellman group (public,
// well-known parameters) in PKCS#3 PEM, QEMU's dh-params.pem. Without that
// file, QEMU generates 2048-bit DH parameters of its own at every start of
// a guest with server TLS credentials: 0.1-0.4 s of CPU (measured with
// this machine's QEMU), on the path of every guest start, crash restart
// and migration target.
const ffdhe2048 = `-----BEGIN DH PARAMETERS-----
MIIBCAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEoXJf//////////wIBAg==
-----END DH PARAMETERS-----
`

// WriteTLSCreds lays out the cluster CA and this host's certificate and key
// in dir under the names QEMU's tls-creds-x509 reads (ca-cert.pem,
// server-cert.pem, server-key.pem, client-cert.pem, client-key.pem: the
// host's certificate serves both ends, it is valid for server and client
// use), and the DH parameters dh-params.pem (ffdhe2048). With crl set,
// the revocation list signed by the cluster CA (the removed hosts'
// certificates) goes to ca-crl.pem, which QEMU checks the peer's
// certificate against; while crl does not exist yet, there is none. Each
// file is replaced atomically. With gid < 0 only root reads them (dir
// 0700, files 0600); otherwise root and group gid do (dir 0750, files
// 0640), for a QEMU that reads them as that group.
func WriteTLSCreds(dir, ca, cert, key, crl string, gid int) error {
	dirMode, fileMode := os.FileMode(0o700), os.FileMode(0o600)
	if gid >= 0 {
		dirMode, fileMode = 0o750, 0o640
	}
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return fmt.Errorf("migration TLS credentials: %w", err)
	}
	if err := setOwner(dir, dirMode, gid); err != nil {
		return err
	}
	files := map[string]string{"ca-cert.pem": ca, "server-cert.pem": cert, "server-key.pem": key, "client-cert.pem": cert, "client-key.pem": key, "dh-params.pem": ""}
	if crl != "" {
		if _, err := os.Stat(crl); err == nil {
			files["ca-crl.pem"] = crl
		} else if err := os.Remove(filepath.Join(dir, "ca-crl.pem")); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("migration TLS credentials: %w", err)
		}
	}
	for name, src := range files {
		b := []byte(ffdhe2048)
		if src != "" {
			var err error
			if b, err = os.ReadFile(src); err != nil {
				return fmt.Errorf("migration TLS credentials: %w", err)
			}
		}
		tmp := filepath.Join(dir, name+".tmp")
		if err := os.WriteFile(tmp, b, 0o600); err != nil {
			return fmt.Errorf("migration TLS credentials: %w", err)
		}
		if err := setOwner(tmp, fileMode, gid); err != nil {
			return err
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("migration TLS credentials: %w", err)
		}
	}
	return nil
}

// setOwner gives path to root (or this process's user) and group gid (when
// not negative) with mode.
func setOwner(path string, mode os.FileMode, gid int) error {
	if gid >= 0 {
		if err := os.Chown(path, os.Geteuid(), gid); err != nil {
			return fmt.Errorf("migration TLS credentials: %w", err)
		}
	}
	if err := os.Chmod(path, mode); err != nil {
		return fmt.Errorf("migration TLS credentials: %w", err)
	}
	return nil
}
