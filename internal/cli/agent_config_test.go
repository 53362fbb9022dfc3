package cli

import (
	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/store"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAgentConfigFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "agent.yaml")
	os.WriteFile(file, []byte("node: fromfile\nlisten: 10.0.0.1:7400\nlease-ttl: 12s\ntoken: secret-join-token\nstore-endpoints: [https://a:2379, https://b:2379]\nlog-format: json\n"), 0o600)
	code, out, errs := runCLI(t, "agent", "--config", file, "--node", "fromflag", "--print-config")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{"node: fromflag\n", "listen: 10.0.0.1:7400\n", "lease-ttl: 12s\n", "store-endpoints: https://a:2379,https://b:2379\n", "log-format: json\n", "# log level: debug, info, warn, error\nlog-level: info\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("--print-config lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "secret-join-token") || strings.Contains(out, "print-config:") || strings.Contains(out, "\nconfig:") {
		t.Errorf("--print-config shows a secret or a flag a file cannot set:\n%s", out)
	}
	// Its output is a valid config file that gives the same settings.
	printed := filepath.Join(dir, "printed.yaml")
	os.WriteFile(printed, []byte(out), 0o600)
	code, out2, errs := runCLI(t, "agent", "--config", printed, "--print-config")
	if code != 0 {
		t.Fatalf("printed config refused: %s", errs)
	}
	if strings.SplitN(out2, "\n", 2)[1] != strings.SplitN(out, "\n", 2)[1] {
		t.Errorf("printed config does not round-trip:\n%s\nvs\n%s", out, out2)
	}
}

func TestAgentConfigFileErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "agent.yaml")
	os.WriteFile(file, []byte("node: h1\n# comment\nlisten-addr: 1.2.3.4:1\n"), 0o600)
	code, _, errs := runCLI(t, "agent", "--config", file, "--print-config")
	if code != 1 || !strings.Contains(errs, file+`:3: unknown key "listen-addr"`) {
		t.Errorf("exit %d, stderr %q", code, errs)
	}
	code, _, errs = runCLI(t, "agent", "--config", filepath.Join(dir, "missing.yaml"), "--print-config")
	if code != 1 || !strings.Contains(errs, "missing.yaml: no such file") {
		t.Errorf("a missing explicit config file: exit %d, stderr %q", code, errs)
	}
	code, _, errs = runCLI(t, "agent", "--config", file, "--log-format", "xml", "--dev")
	if code == 0 {
		t.Errorf("--log-format xml accepted")
	}
}

func TestStatusFeaturesLine(t *testing.T) {
	h := func(name string, level int) model.NodeFacts { return model.NodeFacts{Name: name, FeatureLevel: level} }
	for _, tc := range []struct {
		hosts []model.NodeFacts
		want  string
	}{
		{[]model.NodeFacts{h("h1", 1), h("h2", 1)}, "Features: level 1 on every host"},
		{[]model.NodeFacts{h("h1", 1), h("h2", 0), h("h3", 1)}, "Features: level 0; waiting for h2 to upgrade: migration-tls"},
		{[]model.NodeFacts{h("h1", 2), h("h2", 1), h("h3", 0)}, "Features: level 0; waiting for h2, h3 to upgrade: migration-tls, store-roles"},
		{[]model.NodeFacts{h("h1", 3), h("h2", 2)}, "Features: level 2; waiting for h2 to upgrade: level 3"},
	} {
		f := model.ClusterFeatures(tc.hosts)
		if got := featuresLine(&f); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.hosts, got, tc.want)
		}
	}
	if got := featuresLine(nil); got != "" {
		t.Errorf("an agent without feature levels: %q", got)
	}
}

func TestStatusFenceFormLine(t *testing.T) {
	for _, tc := range []struct {
		form *store.FenceForm
		want string
	}{
		{nil, ""},
		{&store.FenceForm{}, ""},
		{&store.FenceForm{Clear: true, OldHosts: []string{"h2"}}, "WARNING: fence passwords are stored unsealed, readable by whoever reads the store, while h2 may run a release that cannot open sealed secrets: upgrade or remove it (docs/security.md)"},
		{&store.FenceForm{OldHosts: []string{"h2", "h3"}}, "WARNING: fence passwords would be stored (once set) unsealed, readable by whoever reads the store, while h2, h3 may run a release that cannot open sealed secrets: upgrade or remove them (docs/security.md)"},
	} {
		if got := fenceFormLine(tc.form); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.form, got, tc.want)
		}
	}
}

func TestStatusVersionsLine(t *testing.T) {
	h := func(name, v string) api.Host { return api.Host{Name: name, Facts: &model.NodeFacts{AgentVersion: v}} }
	if got := versionsLine([]api.Host{h("h1", "1.0.0"), h("h2", "1.0.0"), {Name: "h3"}}); got != "" {
		t.Errorf("one version: %q", got)
	}
	got := versionsLine([]api.Host{h("h1", "1.1.0"), h("h2", "1.0.0"), h("h3", "1.1.0")})
	if got != "Versions: MIXED (upgrade in progress): 1.0.0 on h2; 1.1.0 on h1, h3" {
		t.Errorf("mixed: %q", got)
	}
}
