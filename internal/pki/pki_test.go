package pki

import (
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

func TestIssueAndHandshake(t *testing.T) {
	now := time.Now()
	ca, err := NewCA("c1", now)
	if err != nil {
		t.Fatal(err)
	}
	srvCert, srvKey, err := ca.IssueNode("n1", []string{"127.0.0.1", "n1.example"}, now)
	if err != nil {
		t.Fatal(err)
	}
	cliCert, cliKey, err := ca.IssueNode("n2", []string{"127.0.0.2"}, now)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ParseCert(srvCert)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != "n1" || len(cert.IPAddresses) != 1 || cert.DNSNames[0] != "n1" {
		t.Fatalf("subject %v ips %v dns %v", cert.Subject, cert.IPAddresses, cert.DNSNames)
	}
	// The CA round-trips through PEM.
	if _, err := LoadCA(ca.CertPEM, ca.KeyPEM); err != nil {
		t.Fatal(err)
	}

	other, _ := NewCA("c2", now)
	otherCert, otherKey, _ := other.IssueNode("x", []string{"127.0.0.1"}, now)

	serverTLS, err := ServerTLS(ca.CertPEM, srvCert, srvKey, true)
	if err != nil {
		t.Fatal(err)
	}
	good, _ := ClientTLS(ca.CertPEM, cliCert, cliKey)
	foreign, _ := ClientTLS(ca.CertPEM, otherCert, otherKey)
	noCert, _ := ClientTLS(ca.CertPEM, nil, nil)
	wrongRoot, _ := ClientTLS(other.CertPEM, cliCert, cliKey)
	pinned := PinnedTLS(Fingerprint(ca.Cert)[:32])
	badPin := PinnedTLS(Fingerprint(other.Cert)[:32])
	for _, tt := range []struct {
		name string
		cfg  *tls.Config
		ok   bool
	}{
		{"cluster client", good, true},
		{"client cert of another CA", foreign, false},
		{"no client cert", noCert, false},
		{"server of another CA", wrongRoot, false},
		{"pinned CA", withCert(pinned, cliCert, cliKey), true},
		{"wrong pin", withCert(badPin, cliCert, cliKey), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := handshake(t, serverTLS, tt.cfg)
			if (err == nil) != tt.ok {
				t.Fatalf("handshake error %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func withCert(c *tls.Config, cert, key []byte) *tls.Config {
	pair, _ := tls.X509KeyPair(cert, key)
	c.Certificates = []tls.Certificate{pair}
	return c
}

// handshake connects a client to a server over loopback TCP and exchanges
// one byte, so that a rejected client certificate (seen by the client only
// after the handshake in TLS 1.3) fails too.
func handshake(t *testing.T, srv, cli *tls.Config) error {
	l, err := tls.Listen("tcp", "127.0.0.1:0", srv)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 1)
		if _, err := c.Read(buf); err == nil {
			c.Write(buf)
		}
	}()
	cli = cli.Clone()
	cli.ServerName = "127.0.0.1"
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", l.Addr().String(), cli)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("x")); err != nil {
		return err
	}
	_, err = c.Read(make([]byte, 1))
	return err
}

func TestSignCSRForcesName(t *testing.T) {
	ca, _ := NewCA("c", time.Now())
	_, csr, err := NewKeyAndCSR("evil", []string{"10.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	all := func(string) bool { return true }
	certPEM, _, err := ca.SignCSR(csr, "n3", all, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c, _ := ParseCert(certPEM)
	if c.Subject.CommonName != "n3" {
		t.Fatalf("CN %q, want the registered name n3", c.Subject.CommonName)
	}
	if _, _, err := ca.SignCSR([]byte("junk"), "n3", all, time.Now()); err == nil {
		t.Fatal("signed junk")
	}
}

// Issue 10, High 3: the signer keeps only the addresses the cluster allows:
// a joining host cannot get a certificate for another host's name or for
// 8.8.8.8.
func TestSignCSRKeepsOnlyAllowedSANs(t *testing.T) {
	ca, _ := NewCA("c", time.Now())
	_, csr, err := NewKeyAndCSR("n3", []string{"10.0.0.3", "8.8.8.8", "n1", "n3.example"})
	if err != nil {
		t.Fatal(err)
	}
	allowed := map[string]bool{"10.0.0.3": true, "n3.example": true}
	certPEM, dropped, err := ca.SignCSR(csr, "n3", func(h string) bool { return allowed[h] }, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c, _ := ParseCert(certPEM)
	if fmt.Sprint(c.DNSNames) != "[n3 n3.example]" || len(c.IPAddresses) != 1 || c.IPAddresses[0].String() != "10.0.0.3" {
		t.Errorf("certificate names %v, addresses %v; want n3, n3.example and 10.0.0.3 only", c.DNSNames, c.IPAddresses)
	}
	if fmt.Sprint(dropped) != "[n1 8.8.8.8]" {
		t.Errorf("dropped %v, want [n1 8.8.8.8]", dropped)
	}
}

func TestTokens(t *testing.T) {
	ca, _ := NewCA("c", time.Now())
	api, join := NewAPIToken(), NewJoinToken(Fingerprint(ca.Cert))
	for _, tok := range []Token{api, join} {
		got, err := ParseToken(tok.String())
		if err != nil || got != tok {
			t.Fatalf("round trip %q: %+v %v", tok.String(), got, err)
		}
		if !SecretMatches(tok.Secret, tok.Hash()) || SecretMatches(tok.Secret+"x", tok.Hash()) {
			t.Fatal("secret check")
		}
	}
	for _, bad := range []string{"", "hvt", "hvt..", "hvt.a.b.c", "hvj.a.b", "hvj.a.b.xyz", "hvx.a.b", "hvt.A.b", "hvt.a.b!", "hvj.a.b." + strings.Repeat("g", 32)} {
		if _, err := ParseToken(bad); err == nil {
			t.Errorf("ParseToken(%q) accepted", bad)
		}
	}
}

func FuzzParseToken(f *testing.F) {
	f.Add(NewAPIToken().String())
	f.Add(NewJoinToken(strings.Repeat("ab", 32)).String())
	f.Add("hvt.a.b")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseToken(s)
		if err != nil {
			return
		}
		again, err := ParseToken(tok.String())
		if err != nil || again != tok {
			t.Fatalf("%q parsed to %+v which does not round-trip: %+v %v", s, tok, again, err)
		}
	})
}

// FuzzSignCSR: whatever a joining host sends as its CSR, signing either
// fails cleanly or yields a certificate for the registered name.
func FuzzSignCSR(f *testing.F) {
	ca, err := NewCA("fuzz", time.Now())
	if err != nil {
		f.Fatal(err)
	}
	_, csr, _ := NewKeyAndCSR("n1", []string{"127.0.0.1"})
	f.Add(csr)
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		certPEM, _, err := ca.SignCSR(data, "n1", func(h string) bool { return h == "127.0.0.1" }, time.Now())
		if err != nil {
			return
		}
		c, err := ParseCert(certPEM)
		if err != nil || c.Subject.CommonName != "n1" {
			t.Fatalf("signed %q: %v", c.Subject.CommonName, err)
		}
		if len(c.DNSNames) != 1 || c.DNSNames[0] != "n1" || len(c.URIs)+len(c.EmailAddresses) > 0 {
			t.Fatalf("signed names %v %v %v beyond the node's", c.DNSNames, c.URIs, c.EmailAddresses)
		}
		for _, ip := range c.IPAddresses {
			if ip.String() != "127.0.0.1" {
				t.Fatalf("signed address %s the cluster did not allow", ip)
			}
		}
	})
}
