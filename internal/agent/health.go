package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/store"
)

// Health endpoints, public on the API and on --metrics-listen:
//
//	/healthz  200 while the agent process serves at all (liveness)
//	/readyz   200 once the agent is ready, holds its lease and the store
//	          answers; 503 with the reason otherwise (readiness)
//	/metrics  Prometheus metrics (docs/metrics.md)
func (a *Agent) registerHealth() {
	a.srv.HandleFunc("GET", "/healthz", api.RolePublic, a.serveHealthz)
	a.srv.HandleFunc("GET", "/readyz", api.RolePublic, a.serveReadyz)
	a.srv.Handle("GET", "/metrics", api.RolePublic, promhttp.Handler())
}

func (a *Agent) serveHealthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "ok")
}

func (a *Agent) serveReadyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := a.readiness(ctx); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "not ready: %v\n", err)
		return
	}
	fmt.Fprintln(w, "ready")
}

// readiness says why the agent is not ready, or nil.
func (a *Agent) readiness(ctx context.Context) error {
	select {
	case <-a.ready:
	default:
		return errors.New("agent still starting")
	}
	if a.live == nil || a.live.Lease() == 0 {
		return errors.New("no liveness lease")
	}
	if last := a.live.LastRenewed(); !last.IsZero() && a.now().Sub(last) > a.cfg.LeaseTTL {
		return fmt.Errorf("lease last renewed %v ago (TTL %v)", a.now().Sub(last).Round(time.Second), a.cfg.LeaseTTL)
	}
	if _, err := a.st.Client().Get(ctx, store.KeyClusterConfig); err != nil {
		return fmt.Errorf("store does not answer: %w", err)
	}
	return nil
}

// serveMetricsHTTP serves the health and metrics endpoints over plain HTTP
// on ln (--metrics-listen) until the agent stops.
func (a *Agent) serveMetricsHTTP(ln net.Listener) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", a.serveHealthz)
	mux.HandleFunc("GET /readyz", a.serveReadyz)
	mux.Handle("GET /metrics", promhttp.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 64 << 10}
	a.metricsSrv = srv
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("metrics server stopped", "op", "metrics", "err", err)
		}
	}()
}

// Healthy asks the agent's own API for /healthz over TLS, as a client
// would: it fails when the API no longer answers (a stuck agent). It is
// the systemd watchdog's check. A store that lost quorum does not make the
// agent unhealthy: restarting it would not help.
func (a *Agent) Healthy(ctx context.Context) error {
	select {
	case <-a.ready:
	default:
		return errors.New("agent not started")
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(a.trustPEM()) {
		return errors.New("no cluster CA")
	}
	host, port, err := net.SplitHostPort(a.cfg.Listen)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, "GET", "https://"+net.JoinHostPort(host, port)+"/healthz", nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return fmt.Errorf("own API health check: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("own API health check: %s", resp.Status)
	}
	return nil
}
