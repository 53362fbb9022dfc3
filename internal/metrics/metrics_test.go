package metrics

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// registered lists the haven_ metric families in the default registry.
func registered(t *testing.T) []string {
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "haven_") {
			names = append(names, mf.GetName())
		}
	}
	return names
}

// Every metric is documented in docs/metrics.md, and the doc, the example
// alert rules and the Grafana dashboard name no metric that does not exist.
func TestMetricsDocumentedAndReferencesExist(t *testing.T) {
	// Vectors appear once they have a series.
	Guests.WithLabelValues("started")
	Hosts.WithLabelValues("online")
	Fences.WithLabelValues("ok")
	Recovery.WithLabelValues("failover", "running")
	StoreWrite.WithLabelValues("save_state")
	have := registered(t)
	doc, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range have {
		if !strings.Contains(string(doc), "`"+m+"`") {
			t.Errorf("docs/metrics.md does not document %s", m)
		}
	}
	re := regexp.MustCompile(`haven_[a-z_]+`)
	for _, f := range []string{"../../docs/metrics.md", "../../packaging/examples/haven-alerts.yaml", "../../packaging/examples/haven-grafana.json"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllString(string(b), -1) {
			base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_count"), "_sum")
			if !slices.Contains(have, base) && base != "haven_recovery_seconds_" {
				t.Errorf("%s names %s, which Haven does not export", f, m)
			}
		}
	}
}

func TestBuildInfo(t *testing.T) {
	if !slices.Contains(registered(t), "haven_build_info") {
		t.Fatal("no haven_build_info")
	}
}
