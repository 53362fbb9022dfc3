// Package notify owns the cluster's notifications: webhooks and a mail
// receiver, configured by admins, that receive the events an operator must
// hear of at once (fences, guests that failed, admission-control warnings,
// quorum loss) as JSON POSTs and as mail (mail.go). The manager sends them as it writes those events to the log;
// quorum loss, when no manager runs, is sent by the agents that notice
// (package hostagent).
package notify

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// Classes of events a webhook may ask for.
const (
	ClassFence       = "fence"        // a host fenced, or a fence that failed
	ClassGuestFailed = "guest-failed" // a guest the manager gave up on, or that failed to start or stop
	ClassNodeFailed  = "node-failed"  // a host failed (before its fence)
	ClassAdmission   = "admission"    // admission control: a guest that does not fit, capacity warnings
	ClassQuorum      = "quorum"       // the store lost quorum (sent by each agent that notices, once per incident)
	ClassTest        = "test"         // haven notify test
)

// Classes lists every class, in the order the docs give them.
var Classes = []string{ClassFence, ClassNodeFailed, ClassGuestFailed, ClassAdmission, ClassQuorum}

// Config is the notification configuration (admin-set, in the store).
type Config struct {
	Webhooks []Webhook `json:"webhooks"`
	// Mail, if set, receives the notifications by mail too.
	Mail *Mail `json:"mail,omitempty"`
}

// Empty says whether c has no receiver at all.
func (c Config) Empty() bool { return len(c.Webhooks) == 0 && c.Mail == nil }

// HasSecret says whether c holds a secret (a webhook's Authorization
// header, the mail password): such a configuration is sealed in the store.
func (c Config) HasSecret() bool {
	return (c.Mail != nil && c.Mail.Password != "") || slices.ContainsFunc(c.Webhooks, func(w Webhook) bool { return w.Header != "" })
}

// Webhook is one receiver.
type Webhook struct {
	// URL receives a POST with a Notification as JSON.
	URL string `json:"url"`
	// Classes it wants; empty: every class.
	Classes []string `json:"classes,omitempty"`
	// Header, if set, is sent as "Authorization: " + Header (for a
	// receiver that wants a token). Sealed in the store, never shown.
	Header string `json:"header,omitempty"`
}

// Check reports the first problem of c, naming the field.
func (c Config) Check() error {
	for i, w := range c.Webhooks {
		u, err := url.Parse(w.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("webhooks[%d].url %q: give an http:// or https:// URL", i, w.URL)
		}
		if strings.ContainsAny(w.Header, "\r\n") {
			return fmt.Errorf("webhooks[%d].header: a line break is not allowed", i)
		}
		if err := checkClasses(fmt.Sprintf("webhooks[%d].classes", i), w.Classes); err != nil {
			return err
		}
	}
	if c.Mail != nil {
		return c.Mail.check()
	}
	return nil
}

// Field names the part of the configuration an error of Check or
// KeepSecrets is about: "mail" or "webhooks".
func Field(err error) string {
	if strings.HasPrefix(err.Error(), "mail") {
		return "mail"
	}
	return "webhooks"
}

func checkClasses(field string, classes []string) error {
	for j, cl := range classes {
		if !slices.Contains(Classes, cl) {
			return fmt.Errorf("%s[%d] %q: use %s", field, j, cl, strings.Join(Classes, ", "))
		}
	}
	return nil
}

// Event is what a notification tells of one event of the log.
type Event struct {
	At    time.Time `json:"at"`
	Kind  string    `json:"kind"`
	Node  string    `json:"node,omitempty"`
	Guest string    `json:"guest,omitempty"`
	Msg   string    `json:"msg"`
}

// Notification is the JSON body a webhook receives.
type Notification struct {
	Cluster string `json:"cluster"`
	Class   string `json:"class"`
	Event   Event  `json:"event"`
	// Text is one line for chat receivers.
	Text string `json:"text"`
}

// Classify says which class an event of the log belongs to, if any.
func Classify(e Event) (string, bool) {
	m := strings.ToLower(e.Msg)
	switch {
	case e.Kind == "fence" && (strings.HasPrefix(m, "fenced ") || strings.HasPrefix(m, "fencing ")):
		return ClassFence, true
	case strings.HasPrefix(m, "node ") && strings.Contains(m, " failed"):
		return ClassNodeFailed, true
	case strings.Contains(m, "admission"):
		return ClassAdmission, true
	case guestFailure(m):
		return ClassGuestFailed, true
	}
	return "", false
}

func guestFailure(m string) bool {
	for _, s := range []string{"failed to start", "could not be stopped", "gave up", "giving up", ": failed", "is failed"} {
		if strings.Contains(m, s) {
			return true
		}
	}
	return false
}

// Result is the outcome of one delivery.
type Result struct {
	// URL is the webhook's, or mailto: and the recipients for the mail.
	URL   string `json:"url"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// Sender posts notifications. Its zero value is not usable: use New.
type Sender struct {
	hc    *http.Client
	log   *slog.Logger
	wg    sync.WaitGroup
	roots *x509.CertPool // the mail relay's CAs; nil: the system's (tests set theirs)
}

// Timeout bounds one delivery.
const Timeout = 5 * time.Second

// New makes a Sender.
func New(log *slog.Logger) *Sender {
	if log == nil {
		log = slog.Default()
	}
	return &Sender{hc: &http.Client{Timeout: Timeout}, log: log}
}

// Send delivers n to every webhook of cfg, and to its mail receiver, that
// wants its class, in parallel, and returns the results.
func (s *Sender) Send(ctx context.Context, cfg Config, n Notification) []Result {
	body, err := json.Marshal(n)
	if err != nil {
		return []Result{{Error: err.Error()}}
	}
	var mu sync.Mutex
	var out []Result
	var wg sync.WaitGroup
	deliver := func(target string, send func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := Result{URL: target, OK: true}
			if err := send(); err != nil {
				r.OK, r.Error = false, err.Error()
				s.log.Warn("notification not delivered", "to", target, "class", n.Class, "err", err)
			}
			mu.Lock()
			out = append(out, r)
			mu.Unlock()
		}()
	}
	if m := cfg.Mail; m != nil && m.wants(n.Class) {
		deliver(m.Target(), func() error { return s.sendMail(ctx, m, n) })
	}
	for _, w := range cfg.Webhooks {
		if n.Class != ClassTest && len(w.Classes) > 0 && !slices.Contains(w.Classes, n.Class) {
			continue
		}
		deliver(w.URL, func() error { return s.post(ctx, w, body) })
	}
	wg.Wait()
	slices.SortFunc(out, func(a, b Result) int { return strings.Compare(a.URL, b.URL) })
	return out
}

// SendAsync is Send in the background (the manager never waits for a
// webhook or a mail relay); Wait waits for those in flight.
func (s *Sender) SendAsync(cfg Config, n Notification) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 2*Timeout)
		defer cancel()
		s.Send(ctx, cfg, n)
	}()
}

// Wait waits for the deliveries SendAsync started.
func (s *Sender) Wait() { s.wg.Wait() }

func (s *Sender) post(ctx context.Context, w Webhook, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, "POST", w.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "haven-notify")
	if w.Header != "" {
		req.Header.Set("Authorization", w.Header)
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode >= 300 {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return nil
}

// Text is the one-line form of an event.
func Text(cluster string, e Event) string {
	return fmt.Sprintf("[haven %s] %s", cluster, e.Msg)
}
