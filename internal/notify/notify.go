// Package notify owns the cluster's notifications: webhooks, configured by
// admins, that receive the events an operator must hear of at once
// (fences, guests that failed, admission-control warnings, quorum loss) as
// JSON POSTs. The manager sends them as it writes those events to the log;
// quorum loss, when no manager runs, is sent by the agents that notice
// (package hostagent).
package notify

import (
	"bytes"
	"context"
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
}

// Webhook is one receiver.
type Webhook struct {
	// URL receives a POST with a Notification as JSON.
	URL string `json:"url"`
	// Classes it wants; empty: every class.
	Classes []string `json:"classes,omitempty"`
	// Header, if set, is sent as "Authorization: " + Header (for a
	// receiver that wants a token).
	Header string `json:"header,omitempty"`
}

// Check reports the first problem of c, naming the field.
func (c Config) Check() error {
	for i, w := range c.Webhooks {
		u, err := url.Parse(w.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("webhooks[%d].url %q: give an http:// or https:// URL", i, w.URL)
		}
		for j, cl := range w.Classes {
			if !slices.Contains(Classes, cl) {
				return fmt.Errorf("webhooks[%d].classes[%d] %q: use %s", i, j, cl, strings.Join(Classes, ", "))
			}
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
	URL   string `json:"url"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// Sender posts notifications. Its zero value is not usable: use New.
type Sender struct {
	hc  *http.Client
	log *slog.Logger
	wg  sync.WaitGroup
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

// Send delivers n to every webhook of cfg that wants its class, in
// parallel, and returns the results.
func (s *Sender) Send(ctx context.Context, cfg Config, n Notification) []Result {
	body, err := json.Marshal(n)
	if err != nil {
		return []Result{{Error: err.Error()}}
	}
	var mu sync.Mutex
	var out []Result
	var wg sync.WaitGroup
	for _, w := range cfg.Webhooks {
		if n.Class != ClassTest && len(w.Classes) > 0 && !slices.Contains(w.Classes, n.Class) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := Result{URL: w.URL, OK: true}
			if err := s.post(ctx, w, body); err != nil {
				r.OK, r.Error = false, err.Error()
				s.log.Warn("notification not delivered", "url", w.URL, "class", n.Class, "err", err)
			}
			mu.Lock()
			out = append(out, r)
			mu.Unlock()
		}()
	}
	wg.Wait()
	slices.SortFunc(out, func(a, b Result) int { return strings.Compare(a.URL, b.URL) })
	return out
}

// SendAsync is Send in the background (the manager never waits for a
// webhook); Wait waits for those in flight.
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
