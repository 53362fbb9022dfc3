package qemu

import (
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTLSDirHasDHParams: the migration TLS directory holds QEMU's
// dh-params.pem, the RFC 7919 ffdhe2048 group, so that QEMU does not
// generate DH parameters at every guest start.
func TestTLSDirHasDHParams(t *testing.T) {
	src := t.TempDir()
	for _, f := range []string{"ca.pem", "cert.pem", "key.pem"} {
		if err := os.WriteFile(filepath.Join(src, f), []byte(f), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	dir, err := writeTLSDir(t.TempDir(), filepath.Join(src, "ca.pem"), filepath.Join(src, "cert.pem"), filepath.Join(src, "key.pem"), "")
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"ca-cert.pem": "ca.pem", "server-cert.pem": "cert.pem", "server-key.pem": "key.pem", "client-cert.pem": "cert.pem", "client-key.pem": "key.pem"} {
		if b, err := os.ReadFile(filepath.Join(dir, name)); err != nil || string(b) != want {
			t.Errorf("%s: %q, %v; want a copy of %s", name, b, err, want)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "dh-params.pem"))
	if err != nil {
		t.Fatalf("no DH parameters for QEMU: %v", err)
	}
	blk, rest := pem.Decode(b)
	if blk == nil || blk.Type != "DH PARAMETERS" || strings.TrimSpace(string(rest)) != "" {
		t.Fatalf("dh-params.pem is not one PKCS#3 PEM block: %q", b)
	}
	var params struct{ P, G *big.Int }
	if _, err := asn1.Unmarshal(blk.Bytes, &params); err != nil {
		t.Fatalf("dh-params.pem: %v", err)
	}
	p := params.P.Text(16)
	if params.P.BitLen() != 2048 || params.G.Int64() != 2 || !strings.HasPrefix(p, "ffffffffffffffffadf85458a2bb4a9a") || !strings.HasSuffix(p, "886b423861285c97ffffffffffffffff") {
		t.Fatalf("dh-params.pem is not RFC 7919 ffdhe2048: %d bits, g %v, p %s", params.P.BitLen(), params.G, p)
	}
	q := new(big.Int).Rsh(params.P, 1)
	if !params.P.ProbablyPrime(20) || !q.ProbablyPrime(20) {
		t.Fatal("dh-params.pem's p is not a safe prime")
	}
}
