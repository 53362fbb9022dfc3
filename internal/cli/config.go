package cli

// The client config: the servers, token file and CA of the cluster the
// CLI talks to, so that no flag is needed on an admin's workstation.
//
//	# ~/.config/haven/config.yaml
//	servers:
//	  - https://10.0.0.1:7400
//	  - https://10.0.0.2:7400
//	token_file: ~/.config/haven/token
//	ca_file: ~/.config/haven/ca.pem
//
// Flags override environment variables, which override the file.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/haven-ha/haven/internal/api/client"
)

// ClientConfig is the CLI's config file.
type ClientConfig struct {
	// Servers are agent API URLs; the CLI tries them in turn.
	Servers []string `yaml:"servers"`
	// TokenFile holds the API token (first line).
	TokenFile string `yaml:"token_file"`
	// CAFile is the cluster CA certificate.
	CAFile string `yaml:"ca_file"`
}

// configPath returns the config file to read: --config, $HAVEN_CONFIG,
// then $XDG_CONFIG_HOME/haven/config.yaml or ~/.config/haven/config.yaml
// if it exists. explicit reports whether the user named it (then it must
// exist).
func configPath(flagValue string, getenv func(string) string) (path string, explicit bool) {
	if flagValue != "" {
		return flagValue, true
	}
	if p := getenv("HAVEN_CONFIG"); p != "" {
		return p, true
	}
	if d := getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "haven", "config.yaml"), false
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".config", "haven", "config.yaml"), false
	}
	return "", false
}

// LoadClientConfig reads a client config file. Unknown keys and wrong
// types are errors that name the file and line.
func LoadClientConfig(path string, r io.Reader) (*ClientConfig, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	var cfg ClientConfig
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: %s", path, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	for i, s := range cfg.Servers {
		if !strings.HasPrefix(s, "https://") {
			return nil, fmt.Errorf("%s: servers[%d] %q: give an https:// URL such as https://10.0.0.1:7400", path, i, s)
		}
	}
	dir := filepath.Dir(path)
	cfg.TokenFile = expandPath(cfg.TokenFile, dir)
	cfg.CAFile = expandPath(cfg.CAFile, dir)
	return &cfg, nil
}

// expandPath resolves ~/ and paths relative to the config file's dir.
func expandPath(p, dir string) string {
	switch {
	case p == "":
		return ""
	case strings.HasPrefix(p, "~/"):
		if h, err := os.UserHomeDir(); err == nil {
			return filepath.Join(h, p[2:])
		}
	case !filepath.IsAbs(p):
		return filepath.Join(dir, p)
	}
	return p
}

// options merges flags, environment and the client config into the
// client's options (flags first).
func (c *clientFlags) options(env *Env) (client.Options, error) {
	o := c.o
	if o.Server == "" {
		o.Server = env.Getenv("HAVEN_SERVER")
	}
	if o.Token == "" {
		o.Token = env.Getenv("HAVEN_TOKEN")
	}
	if o.CAFile == "" {
		o.CAFile = env.Getenv("HAVEN_CACERT")
	}
	o.CacheDir = cacheDir(env.Getenv)
	path, explicit := configPath(c.config, env.Getenv)
	if path == "" || (o.Server != "" && o.Token != "" && o.CAFile != "") {
		return o, nil
	}
	f, err := os.Open(path)
	if err != nil {
		if !explicit && errors.Is(err, os.ErrNotExist) {
			return o, nil
		}
		return o, fmt.Errorf("client config: %w", err)
	}
	defer f.Close()
	cfg, err := LoadClientConfig(path, f)
	if err != nil {
		return o, err
	}
	if o.Server == "" {
		o.Server = strings.Join(cfg.Servers, ",")
	}
	if o.CAFile == "" {
		o.CAFile = cfg.CAFile
	}
	if o.Token == "" && cfg.TokenFile != "" {
		b, err := os.ReadFile(cfg.TokenFile)
		if err != nil {
			return o, fmt.Errorf("client config %s: token_file: %w", path, err)
		}
		o.Token = strings.TrimSpace(string(b))
	}
	return o, nil
}

// cacheDir is where the CLI remembers the cluster's hosts between runs:
// $XDG_CACHE_HOME/haven or ~/.cache/haven; "" when neither is known.
func cacheDir(getenv func(string) string) string {
	if d := getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "haven")
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".cache", "haven")
	}
	return ""
}
