// Package notifytest is a mail relay for tests: an SMTP server on
// loopback that speaks enough of the protocol (EHLO, STARTTLS, AUTH PLAIN,
// MAIL, RCPT, DATA) to receive what package notify sends, and records it.
package notifytest

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"
)

// Message is one mail the server received.
type Message struct {
	From     string   // the envelope sender (MAIL FROM)
	To       []string // the envelope recipients (RCPT TO)
	Data     []byte   // the message, as sent after DATA (dot-unstuffed, CRLF)
	User     string   // AUTH PLAIN's user and password, if any
	Password string
	TLS      bool // whether the message came over TLS
}

// SMTP is a running test relay.
type SMTP struct {
	// Addr is host:port on 127.0.0.1.
	Addr string
	ln   net.Listener
	tls  *tls.Config

	mu  sync.Mutex
	got []Message
	wg  sync.WaitGroup
}

// Start starts a relay, stopped when the test ends. With tlsCfg set it
// offers STARTTLS; with implicit it speaks TLS from the first byte.
func Start(t testing.TB, tlsCfg *tls.Config, implicit bool) *SMTP {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if implicit {
		ln = tls.NewListener(ln, tlsCfg)
	}
	s := &SMTP{Addr: ln.Addr().String(), ln: ln}
	if !implicit {
		s.tls = tlsCfg
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.serve(c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); s.wg.Wait() })
	return s
}

// Close stops accepting connections.
func (s *SMTP) Close() { s.ln.Close() }

// Messages returns what was received so far.
func (s *SMTP) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.got...)
}

// Wait polls until n messages arrived or the deadline passes, and
// returns them.
func (s *SMTP) Wait(n int, within time.Duration) []Message {
	deadline := time.Now().Add(within)
	for {
		if m := s.Messages(); len(m) >= n || time.Now().After(deadline) {
			return m
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (s *SMTP) serve(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	_, isTLS := c.(*tls.Conn)
	tp := textproto.NewConn(c)
	reply := func(format string, a ...any) bool { return tp.PrintfLine(format, a...) == nil }
	if !reply("220 127.0.0.1 haven test relay ESMTP") {
		return
	}
	var m Message
	for {
		line, err := tp.ReadLine()
		if err != nil {
			return
		}
		verb, arg, _ := strings.Cut(line, " ")
		switch strings.ToUpper(verb) {
		case "EHLO", "HELO":
			ext := []string{"250-127.0.0.1 hello " + arg, "250-8BITMIME"}
			if s.tls != nil && !isTLS {
				ext = append(ext, "250-STARTTLS")
			}
			if isTLS {
				ext = append(ext, "250-AUTH PLAIN")
			}
			ext = append(ext, "250 SMTPUTF8")
			if !reply("%s", strings.Join(ext, "\r\n")) {
				return
			}
		case "STARTTLS":
			if s.tls == nil || isTLS {
				reply("502 no STARTTLS here")
				continue
			}
			reply("220 go ahead")
			tc := tls.Server(c, s.tls)
			if tc.Handshake() != nil {
				return
			}
			c, isTLS, m = tc, true, Message{}
			tp = textproto.NewConn(c)
		case "AUTH":
			mech, resp, _ := strings.Cut(arg, " ")
			b, err := base64.StdEncoding.DecodeString(resp)
			parts := strings.Split(string(b), "\x00")
			if strings.ToUpper(mech) != "PLAIN" || err != nil || len(parts) != 3 {
				reply("504 only AUTH PLAIN with an initial response")
				continue
			}
			m.User, m.Password = parts[1], parts[2]
			reply("235 authenticated")
		case "MAIL":
			m.From = addr(arg)
			reply("250 ok")
		case "RCPT":
			m.To = append(m.To, addr(arg))
			reply("250 ok")
		case "DATA":
			if !reply("354 go ahead") {
				return
			}
			data, err := readDot(tp.Reader.R)
			if err != nil {
				return
			}
			m.Data, m.TLS = data, isTLS
			s.mu.Lock()
			s.got = append(s.got, m)
			s.mu.Unlock()
			m = Message{User: m.User, Password: m.Password}
			reply("250 queued")
		case "RSET", "NOOP":
			reply("250 ok")
		case "QUIT":
			reply("221 bye")
			return
		default:
			reply("502 %s not implemented", verb)
		}
	}
}

// addr is the address of "FROM:<a@b> ..." or "TO:<a@b>".
func addr(arg string) string {
	_, a, _ := strings.Cut(arg, ":")
	a, _, _ = strings.Cut(strings.TrimSpace(a), " ")
	return strings.Trim(a, "<>")
}

// readDot reads DATA up to the line ".", keeping CRLF line ends and
// removing the dot-stuffing.
func readDot(r *bufio.Reader) ([]byte, error) {
	var out []byte
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		if line == ".\r\n" {
			return out, nil
		}
		out = append(out, strings.TrimPrefix(line, ".")...)
	}
}
