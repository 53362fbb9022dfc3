package agent

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// One single-host agent: /healthz, /readyz and /metrics answer on the
// plain-HTTP metrics address, the watchdog's own-API check passes, and the
// embedded etcd's metrics are among Haven's.
func TestHealthAndMetricsEndpoints(t *testing.T) {
	dir := t.TempDir()
	metrics := freeAddr(t)
	a, err := New(Config{Node: "h1", DataDir: filepath.Join(dir, "h1"), Listen: freeAddr(t), PeerListen: freeAddr(t), StoreClientListen: freeAddr(t), Init: true, StoreMembers: 1, MetricsListen: metrics})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := a.Healthy(ctx); err == nil {
		t.Fatal("Healthy before Start")
	}
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer a.Stop(context.Background())
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + metrics + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body := get("/readyz"); code != 200 || body != "ready\n" {
		t.Errorf("/readyz: %d %q", code, body)
	}
	code, body := get("/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	for _, want := range []string{"etcd_server_has_leader 1", "go_goroutines"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if err := a.Healthy(ctx); err != nil {
		t.Errorf("Healthy: %v", err)
	}
}
