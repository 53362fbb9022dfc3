package fence

import (
	"context"
	"encoding/json"
	"os"
	"regexp"
	"testing"
)

// TestDocsExamplesValidate checks that every configuration example in
// docs/fencing.md passes validation against the installed agents.
func TestDocsExamplesValidate(t *testing.T) {
	b, err := os.ReadFile("../../docs/fencing.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```json\n(.*?)```").FindAllSubmatch(b, -1)
	if len(blocks) < 5 {
		t.Fatalf("found %d JSON examples, want at least 5", len(blocks))
	}
	for i, blk := range blocks {
		var cfg Config
		if err := json.Unmarshal(blk[1], &cfg); err != nil || cfg.Devices == nil {
			// Not a whole configuration: a single device, used for n1 and n2.
			var d Device
			if err := json.Unmarshal(blk[1], &d); err != nil {
				t.Fatalf("example %d is neither a configuration nor a device: %v\n%s", i+1, err, blk[1])
			}
			cfg = Config{Devices: []Device{d}, Levels: map[string][]Level{"n1": {{Devices: []string{d.Name}}}}}
			if d.Plugs != nil || d.NodeParams != nil {
				cfg.Levels["n2"] = cfg.Levels["n1"]
			}
		}
		for _, d := range cfg.Devices {
			needAgent(t, d.Agent)
		}
		f, err := New(cfg, Options{})
		if err != nil {
			t.Errorf("example %d: %v", i+1, err)
			continue
		}
		if w, err := f.Validate(context.Background()); err != nil || len(w) > 0 {
			t.Errorf("example %d: %v (warnings %q)", i+1, err, w)
		}
	}
}
