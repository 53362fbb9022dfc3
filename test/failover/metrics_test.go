package failover

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// recoveryCount is the sum over the powered-on agents of
// haven_recovery_seconds_count{kind,phase} on their public /metrics. Only
// the agent that was manager when the guest ran again observed it.
func (c *testCluster) recoveryCount(kind, phase string) (float64, error) {
	series := fmt.Sprintf("haven_recovery_seconds_count{kind=%q,phase=%q} ", kind, phase)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: c.tls}, Timeout: 3 * time.Second}
	defer hc.CloseIdleConnections()
	var sum float64
	for _, n := range c.nodes {
		if !n.h.PoweredOn() || n.h.NetworkCut() {
			continue
		}
		req, err := http.NewRequestWithContext(c.ctx, http.MethodGet, n.apiURL()+"/metrics", nil)
		if err != nil {
			return 0, err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, fmt.Errorf("%s: GET /metrics: %w", n.name, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("%s: GET /metrics: HTTP %d, %v", n.name, resp.StatusCode, err)
		}
		for line := range strings.Lines(string(body)) {
			if v, ok := strings.CutPrefix(line, series); ok {
				f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
				if err != nil {
					return 0, fmt.Errorf("%s: /metrics line %q: %w", n.name, strings.TrimSpace(line), err)
				}
				sum += f
			}
		}
	}
	return sum, nil
}

// waitFailoverObserved waits until /metrics shows at least want failover
// latency observations (fault seen → guest running).
func (c *testCluster) waitFailoverObserved(want float64, within time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(within)
	for {
		got, err := c.recoveryCount("failover", "running")
		if err == nil && got >= want {
			c.t.Logf("/metrics: %v failover latency observation(s)", got)
			return
		}
		if time.Now().After(deadline) {
			c.t.Errorf("/metrics: haven_recovery_seconds_count{kind=\"failover\",phase=\"running\"} = %v within %v, want >= %v (last error: %v)", got, within, want, err)
			return
		}
		select {
		case <-c.ctx.Done():
			c.t.Fatalf("waiting for a failover latency in /metrics: %v", c.ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
