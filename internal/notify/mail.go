package notify

// Mail: the same notifications as the webhooks', sent by SMTP (net/smtp)
// to a list of addresses, through a relay the admins name.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/smtp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// How a Mail relay is reached.
const (
	TLSStartTLS = "starttls" // plain connection upgraded with STARTTLS (port 587); the default
	TLSImplicit = "tls"      // TLS from the first byte (port 465)
	TLSNone     = "none"     // no TLS: a local relay only, and no password then
)

// TLSModes lists the values of Mail.TLS.
var TLSModes = []string{TLSStartTLS, TLSImplicit, TLSNone}

// Redacted replaces a secret (the mail password, a webhook's
// Authorization header) wherever the configuration is shown.
const Redacted = "********"

// Mail is the mail receiver of the notifications.
type Mail struct {
	// Server is the SMTP relay, host:port.
	Server string `json:"server"`
	// TLS is starttls (default), tls or none.
	TLS string `json:"tls,omitempty"`
	// User and Password authenticate (PLAIN) when User is set. The
	// password is sealed in the store and never shown.
	User     string `json:"user,omitempty"`
	Password string `json:"password,omitempty"`
	// From is the sender address; To the recipients.
	From string   `json:"from"`
	To   []string `json:"to"`
	// Classes it wants; empty: every class.
	Classes []string `json:"classes,omitempty"`
}

// tlsMode is m.TLS with its default.
func (m *Mail) tlsMode() string {
	if m.TLS == "" {
		return TLSStartTLS
	}
	return m.TLS
}

// Target names the mail receiver in results: mailto: and the recipients.
func (m *Mail) Target() string { return "mailto:" + strings.Join(m.To, ",") }

// Bounds of a mail configuration: a field's bytes (an address is at most
// 254) and the recipients.
const (
	maxMailField = 512
	maxMailTo    = 50
)

// check reports the first problem of m, naming the field.
func (m *Mail) check() error {
	for name, v := range map[string]string{"server": m.Server, "user": m.User, "password": m.Password, "from": m.From} {
		if strings.ContainsAny(v, "\r\n") {
			return fmt.Errorf("mail.%s: a line break is not allowed", name)
		}
		if len(v) > maxMailField {
			return fmt.Errorf("mail.%s: %d bytes, at most %d", name, len(v), maxMailField)
		}
	}
	if len(m.To) > maxMailTo {
		return fmt.Errorf("mail.to: %d recipients, at most %d (use a list address)", len(m.To), maxMailTo)
	}
	host, port, err := net.SplitHostPort(m.Server)
	if err != nil || host == "" {
		return fmt.Errorf("mail.server %q: give the SMTP relay as host:port, such as smtp.example.com:587", m.Server)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("mail.server %q: port %q is not in 1..65535", m.Server, port)
	}
	if !slices.Contains(TLSModes, m.tlsMode()) {
		return fmt.Errorf("mail.tls %q: use %s", m.TLS, strings.Join(TLSModes, ", "))
	}
	switch {
	case m.User != "" && m.Password == "":
		return fmt.Errorf("mail.password: give the password of user %q", m.User)
	case m.User == "" && m.Password != "":
		return errors.New("mail.user: a password is set without a user")
	case m.User != "" && m.tlsMode() == TLSNone:
		return errors.New("mail.tls: none sends no password in the clear: use starttls or tls with a user, or a local relay without one")
	}
	if _, err := mail.ParseAddress(m.From); err != nil {
		return fmt.Errorf("mail.from %q: not an address (%v)", m.From, err)
	}
	if len(m.To) == 0 {
		return errors.New("mail.to: give at least one recipient")
	}
	for i, a := range m.To {
		if len(a) > maxMailField {
			return fmt.Errorf("mail.to[%d]: %d bytes, at most %d", i, len(a), maxMailField)
		}
		if strings.ContainsAny(a, "\r\n") {
			return fmt.Errorf("mail.to[%d]: a line break is not allowed", i)
		}
		if _, err := mail.ParseAddress(a); err != nil {
			return fmt.Errorf("mail.to[%d] %q: not an address (%v)", i, a, err)
		}
	}
	return checkClasses("mail.classes", m.Classes)
}

// wants says whether m takes a notification of class.
func (m *Mail) wants(class string) bool {
	return class == ClassTest || len(m.Classes) == 0 || slices.Contains(m.Classes, class)
}

// message is the RFC 5322 message of n (CRLF line ends), with a
// quoted-printable body.
func (m *Mail) message(n Notification, now time.Time) ([]byte, error) {
	from, err := mail.ParseAddress(m.From)
	if err != nil {
		return nil, err
	}
	var to []string
	for _, a := range m.To {
		ad, err := mail.ParseAddress(a)
		if err != nil {
			return nil, err
		}
		to = append(to, ad.String())
	}
	id := make([]byte, 12)
	_, _ = rand.Read(id)
	domain := from.Address[strings.LastIndexByte(from.Address, '@')+1:]
	var b bytes.Buffer
	hdr := func(k, v string) { fmt.Fprintf(&b, "%s: %s\r\n", k, v) }
	hdr("From", from.String())
	hdr("To", strings.Join(to, ", "))
	hdr("Subject", mime.QEncoding.Encode("utf-8", subject(n)))
	hdr("Date", now.Format(time.RFC1123Z))
	hdr("Message-ID", "<"+hex.EncodeToString(id)+"@"+domain+">")
	hdr("MIME-Version", "1.0")
	hdr("Content-Type", "text/plain; charset=utf-8")
	hdr("Content-Transfer-Encoding", "quoted-printable")
	hdr("X-Haven-Class", n.Class)
	b.WriteString("\r\n")
	qp := quotedprintable.NewWriter(&b)
	_, _ = qp.Write([]byte(body(n)))
	if err := qp.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// subject is the mail's one-line subject: the event's text, without line
// breaks, cut at 200 characters.
func subject(n Notification) string {
	s := strings.Join(strings.Fields(n.Text), " ")
	if r := []rune(s); len(r) > 200 {
		s = string(r[:199]) + "…"
	}
	return s
}

// body lists the event's fields, CRLF-terminated.
func body(n Notification) string {
	var lines []string
	add := func(k, v string) {
		if v != "" {
			lines = append(lines, fmt.Sprintf("%-8s %s", k+":", v))
		}
	}
	lines = append(lines, n.Event.Msg, "")
	add("Cluster", n.Cluster)
	add("Class", n.Class)
	add("Kind", n.Event.Kind)
	if !n.Event.At.IsZero() {
		add("At", n.Event.At.UTC().Format(time.RFC3339Nano))
	}
	add("Node", n.Event.Node)
	add("Guest", n.Event.Guest)
	s := strings.Join(lines, "\n") + "\n"
	s = strings.ReplaceAll(s, "\r", "")
	return strings.ReplaceAll(s, "\n", "\r\n")
}

// sendMail delivers n to m's recipients, within ctx's deadline.
func (s *Sender) sendMail(ctx context.Context, m *Mail, n Notification) error {
	msg, err := m.message(n, time.Now())
	if err != nil {
		return err
	}
	host, _, _ := net.SplitHostPort(m.Server)
	tlsCfg := &tls.Config{ServerName: host, RootCAs: s.roots, MinVersion: tls.VersionTLS12}
	d := &net.Dialer{Timeout: Timeout}
	var conn net.Conn
	if m.tlsMode() == TLSImplicit {
		conn, err = (&tls.Dialer{NetDialer: d, Config: tlsCfg}).DialContext(ctx, "tcp", m.Server)
	} else {
		conn, err = d.DialContext(ctx, "tcp", m.Server)
	}
	if err != nil {
		return fmt.Errorf("smtp %s: %w", m.Server, err)
	}
	deadline := time.Now().Add(Timeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = conn.SetDeadline(deadline)
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		conn.Close()
		return fmt.Errorf("smtp %s: %w", m.Server, err)
	}
	defer c.Close()
	if err := smtpSend(c, m, tlsCfg, msg); err != nil {
		return fmt.Errorf("smtp %s: %w", m.Server, err)
	}
	return nil
}

func smtpSend(c *smtp.Client, m *Mail, tlsCfg *tls.Config, msg []byte) error {
	if err := c.Hello("haven"); err != nil {
		return err
	}
	if m.tlsMode() == TLSStartTLS {
		if ok, _ := c.Extension("STARTTLS"); !ok {
			return errors.New("the server offers no STARTTLS: set tls to tls (port 465) or none (a local relay)")
		}
		if err := c.StartTLS(tlsCfg); err != nil {
			return err
		}
	}
	if m.User != "" {
		if err := c.Auth(smtp.PlainAuth("", m.User, m.Password, tlsCfg.ServerName)); err != nil {
			return err
		}
	}
	from, _ := mail.ParseAddress(m.From)
	if err := c.Mail(from.Address); err != nil {
		return err
	}
	for _, a := range m.To {
		ad, _ := mail.ParseAddress(a)
		if err := c.Rcpt(ad.Address); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

// Redacted returns c with its secrets replaced by Redacted, fit for the
// API and logs.
func (c Config) Redacted() Config {
	r := c
	r.Webhooks = slices.Clone(c.Webhooks)
	for i := range r.Webhooks {
		if r.Webhooks[i].Header != "" {
			r.Webhooks[i].Header = Redacted
		}
	}
	if c.Mail != nil {
		m := *c.Mail
		if m.Password != "" {
			m.Password = Redacted
		}
		r.Mail = &m
	}
	return r
}

// KeepSecrets returns c with each secret that reads Redacted (a client
// sending back what it read) replaced by old's value. A secret is kept
// only for the same receiver (a webhook of the same URL; the mail relay
// of the same server and user): one re-pointed elsewhere needs its secret
// again, or whoever edits the configuration could have it sent to an
// address of their choosing.
func (c Config) KeepSecrets(old Config) (Config, error) {
	r := c
	r.Webhooks = slices.Clone(c.Webhooks)
	for i := range r.Webhooks {
		w := &r.Webhooks[i]
		if w.Header != Redacted {
			continue
		}
		j := slices.IndexFunc(old.Webhooks, func(o Webhook) bool { return o.URL == w.URL })
		if j < 0 || old.Webhooks[j].Header == "" {
			return c, fmt.Errorf("webhooks[%d].header: give the Authorization header again (no stored one for %s)", i, w.URL)
		}
		w.Header = old.Webhooks[j].Header
	}
	if c.Mail != nil && c.Mail.Password == Redacted {
		m := *c.Mail
		o := old.Mail
		if o == nil || o.Password == "" || o.Server != m.Server || o.User != m.User {
			return c, errors.New("mail.password: give the password again (no stored one for this server and user)")
		}
		m.Password = o.Password
		r.Mail = &m
	}
	return r, nil
}
