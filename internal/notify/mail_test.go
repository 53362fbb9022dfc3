package notify

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"mime/quotedprintable"
	"net/mail"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/notify/notifytest"
	"github.com/haven-ha/haven/internal/pki"
)

var fenceEvent = Event{At: time.Date(2026, 12, 6, 9, 30, 0, 0, time.UTC), Kind: "fence", Node: "h1",
	Msg: "fenced h1: level 1 (pdu), off, confirmed, in 160ms"}

func fenceNotification() Notification {
	return Notification{Cluster: "prod", Class: ClassFence, Event: fenceEvent, Text: Text("prod", fenceEvent)}
}

// TestMailFence: a fence event reaches a local relay (no TLS) as a mail
// with the right envelope, headers and body; a mail receiver that wants
// other classes gets nothing.
func TestMailFence(t *testing.T) {
	relay := notifytest.Start(t, nil, false)
	cfg := Config{Mail: &Mail{Server: relay.Addr, TLS: TLSNone, From: "Haven <haven@example.com>", To: []string{"ops@example.com", "Night Shift <oncall@example.com>"}}}
	if err := cfg.Check(); err != nil {
		t.Fatal(err)
	}
	res := New(nil).Send(context.Background(), cfg, fenceNotification())
	if len(res) != 1 || !res[0].OK || res[0].URL != "mailto:ops@example.com,Night Shift <oncall@example.com>" {
		t.Fatalf("results %+v", res)
	}
	got := relay.Messages()
	if len(got) != 1 {
		t.Fatalf("the relay got %d messages, want 1", len(got))
	}
	m := got[0]
	if m.From != "haven@example.com" || strings.Join(m.To, " ") != "ops@example.com oncall@example.com" || m.TLS || m.User != "" {
		t.Errorf("envelope: from %q to %q, tls %v, user %q", m.From, m.To, m.TLS, m.User)
	}
	msg, err := mail.ReadMessage(strings.NewReader(string(m.Data)))
	if err != nil {
		t.Fatalf("the message does not parse: %v\n%s", err, m.Data)
	}
	for k, want := range map[string]string{
		"From":                      `"Haven" <haven@example.com>`,
		"To":                        `<ops@example.com>, "Night Shift" <oncall@example.com>`,
		"Subject":                   "[haven prod] fenced h1: level 1 (pdu), off, confirmed, in 160ms",
		"Content-Type":              "text/plain; charset=utf-8",
		"Content-Transfer-Encoding": "quoted-printable",
		"Mime-Version":              "1.0",
		"X-Haven-Class":             "fence",
	} {
		if v := msg.Header.Get(k); v != want {
			t.Errorf("header %s: %q, want %q", k, v, want)
		}
	}
	if _, err := msg.Header.Date(); err != nil {
		t.Errorf("Date: %v", err)
	}
	if id := msg.Header.Get("Message-Id"); !strings.HasPrefix(id, "<") || !strings.HasSuffix(id, "@example.com>") {
		t.Errorf("Message-ID %q", id)
	}
	body, err := io.ReadAll(quotedprintable.NewReader(msg.Body))
	if err != nil {
		t.Fatalf("the body is not quoted-printable: %v", err)
	}
	text := string(body)
	for _, want := range []string{
		"fenced h1: level 1 (pdu), off, confirmed, in 160ms\r\n\r\n",
		"Cluster: prod\r\n", "Class:   fence\r\n", "Kind:    fence\r\n",
		"At:      2026-12-06T09:30:00Z\r\n", "Node:    h1\r\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("body lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "Guest:") {
		t.Errorf("body names a guest the event has not:\n%s", text)
	}

	cfg.Mail.Classes = []string{ClassQuorum}
	if res := New(nil).Send(context.Background(), cfg, fenceNotification()); len(res) != 0 {
		t.Errorf("a quorum-only mail receiver got a fence: %+v", res)
	}
}

// TestMailTLS: STARTTLS and implicit TLS, with a password, against relays
// whose certificate the sender trusts; and a relay without STARTTLS is
// refused when STARTTLS is asked for, never sent the password in clear.
func TestMailTLS(t *testing.T) {
	now := time.Now()
	ca, err := pki.NewCA("mail-test", now)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.IssueNode("relay", []string{"127.0.0.1"}, now)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.CertPEM)
	srvTLS := &tls.Config{Certificates: []tls.Certificate{cert}}
	s := New(nil)
	s.roots = roots

	for _, tt := range []struct {
		mode     string
		implicit bool
	}{{TLSStartTLS, false}, {TLSImplicit, true}} {
		relay := notifytest.Start(t, srvTLS, tt.implicit)
		cfg := Config{Mail: &Mail{Server: relay.Addr, TLS: tt.mode, User: "haven", Password: "s3cret", From: "haven@example.com", To: []string{"ops@example.com"}}}
		if err := cfg.Check(); err != nil {
			t.Fatal(err)
		}
		if res := s.Send(context.Background(), cfg, fenceNotification()); len(res) != 1 || !res[0].OK {
			t.Fatalf("%s: %+v", tt.mode, res)
		}
		got := relay.Messages()
		if len(got) != 1 || !got[0].TLS || got[0].User != "haven" || got[0].Password != "s3cret" {
			t.Errorf("%s: the relay got %+v", tt.mode, got)
		}
	}

	plain := notifytest.Start(t, nil, false)
	cfg := Config{Mail: &Mail{Server: plain.Addr, User: "haven", Password: "s3cret", From: "haven@example.com", To: []string{"ops@example.com"}}}
	res := s.Send(context.Background(), cfg, fenceNotification())
	if len(res) != 1 || res[0].OK || !strings.Contains(res[0].Error, "offers no STARTTLS") {
		t.Errorf("a relay without STARTTLS: %+v", res)
	}
	if len(plain.Messages()) != 0 {
		t.Error("mail sent without the STARTTLS asked for")
	}
}

// TestMailCheck: a bad mail configuration is refused, naming the field
// and what to do.
func TestMailCheck(t *testing.T) {
	good := func() *Mail {
		return &Mail{Server: "smtp.example.com:587", From: "haven@example.com", To: []string{"ops@example.com"}}
	}
	for _, tt := range []struct {
		edit func(m *Mail)
		want string
	}{
		{func(m *Mail) { m.Server = "smtp.example.com" }, `mail.server "smtp.example.com": give the SMTP relay as host:port`},
		{func(m *Mail) { m.Server = ":25" }, `mail.server ":25": give the SMTP relay as host:port`},
		{func(m *Mail) { m.Server = "smtp.example.com:0" }, `mail.server "smtp.example.com:0": port "0" is not in 1..65535`},
		{func(m *Mail) { m.Server = "smtp.example.com:65536" }, `port "65536" is not in 1..65535`},
		{func(m *Mail) { m.Server = "smtp.example.com:smtp" }, `port "smtp" is not in 1..65535`},
		{func(m *Mail) { m.TLS = "ssl" }, `mail.tls "ssl": use starttls, tls, none`},
		{func(m *Mail) { m.User = "u" }, `mail.password: give the password of user "u"`},
		{func(m *Mail) { m.Password = "p" }, `mail.user: a password is set without a user`},
		{func(m *Mail) { m.TLS, m.User, m.Password = TLSNone, "u", "p" }, `mail.tls: none sends no password in the clear`},
		{func(m *Mail) { m.From = "haven" }, `mail.from "haven": not an address`},
		{func(m *Mail) { m.From = "haven@example.com\r\nBcc: all@example.com" }, `mail.from: a line break is not allowed`},
		{func(m *Mail) { m.User, m.Password = "u", "p\nx" }, `mail.password: a line break is not allowed`},
		{func(m *Mail) { m.To = nil }, `mail.to: give at least one recipient`},
		{func(m *Mail) { m.To = []string{"ops@example.com", "x"} }, `mail.to[1] "x": not an address`},
		{func(m *Mail) { m.To = slices.Repeat([]string{"ops@example.com"}, 51) }, `mail.to: 51 recipients, at most 50`},
		{func(m *Mail) { m.User = strings.Repeat("u", 600) }, `mail.user: 600 bytes, at most 512`},
		{func(m *Mail) { m.To = []string{"ops@example.com\nSubject: pwned"} }, `mail.to[0]: a line break is not allowed`},
		{func(m *Mail) { m.Classes = []string{"fences"} }, `mail.classes[0] "fences": use fence, node-failed`},
	} {
		m := good()
		tt.edit(m)
		err := Config{Mail: m}.Check()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Check(%+v) = %v; want %q", m, err, tt.want)
		} else if Field(err) != "mail" {
			t.Errorf("Field(%v) = %q", err, Field(err))
		}
	}
	if err := (Config{Mail: good()}).Check(); err != nil {
		t.Errorf("a good configuration: %v", err)
	}
	if err := (Config{Webhooks: []Webhook{{URL: "http://h/x", Header: "Bearer x\r\nX-Evil: 1"}}}).Check(); err == nil || !strings.Contains(err.Error(), "webhooks[0].header: a line break") {
		t.Errorf("a header with a line break: %v", err)
	}
}

// TestSecretsRedactedAndKept: a read shows no secret; sending back what
// was read keeps the stored secrets of the same receivers only.
func TestSecretsRedactedAndKept(t *testing.T) {
	stored := Config{
		Webhooks: []Webhook{{URL: "https://a/x", Header: "Bearer tok"}},
		Mail:     &Mail{Server: "smtp.example.com:587", User: "u", Password: "pw", From: "h@example.com", To: []string{"o@example.com"}},
	}
	read := stored.Redacted()
	if read.Webhooks[0].Header != Redacted || read.Mail.Password != Redacted || stored.Mail.Password != "pw" || stored.Webhooks[0].Header != "Bearer tok" {
		t.Fatalf("redacted %+v %+v; stored %+v", read, read.Mail, stored.Mail)
	}
	back, err := read.KeepSecrets(stored)
	if err != nil || back.Mail.Password != "pw" || back.Webhooks[0].Header != "Bearer tok" || read.Mail.Password != Redacted {
		t.Fatalf("kept: %+v %v", back, err)
	}
	moved := stored.Redacted()
	moved.Mail.Server = "evil.example.com:587"
	if _, err := moved.KeepSecrets(stored); err == nil || !strings.Contains(err.Error(), "mail.password: give the password again") {
		t.Errorf("a relay re-pointed elsewhere kept the password: %v", err)
	}
	moved = stored.Redacted()
	moved.Webhooks[0].URL = "https://evil/x"
	if _, err := moved.KeepSecrets(stored); err == nil || !strings.Contains(err.Error(), "webhooks[0].header: give the Authorization header again") {
		t.Errorf("a webhook re-pointed elsewhere kept its header: %v", err)
	}
}
