package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/haven-ha/haven/internal/agent"
	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/api/client"
	"github.com/haven-ha/haven/internal/ha"
	"github.com/haven-ha/haven/internal/store"
)

func init() {
	Register(&Command{
		Path:  "agent",
		Args:  "--node NAME --data-dir DIR --listen HOST:PORT --peer-listen HOST:PORT (--init | --join URL --token T) | --dev",
		Short: "run the per-host Haven agent (creates, joins or rejoins a cluster)",
		Run:   runAgent,
	})
	Register(&Command{
		Path:  "token create",
		Args:  "--role admin|operator|viewer|join [--name N] [--ttl 24h] [-o json]",
		Short: "create an API token or a join token",
		Run:   runTokenCreate,
	})
	Register(&Command{
		Path:  "token list",
		Args:  "[-o json]",
		Short: "list API and join tokens (without secrets)",
		Run:   runTokenList,
	})
	Register(&Command{
		Path:  "token revoke",
		Args:  "ID",
		Short: "revoke a token",
		Run:   runTokenRevoke,
	})
}

// Dev mode addresses.
const (
	devListen     = "127.0.0.1:7400"
	devPeerListen = "127.0.0.1:7401"
)

func runAgent(ctx context.Context, env *Env, args []string) error {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	host, _ := os.Hostname()
	var cfg agent.Config
	var endpoints, logLevel string
	fs.StringVar(&cfg.Node, "node", strings.ToLower(host), "node name, unique in the cluster")
	fs.StringVar(&cfg.DataDir, "data-dir", client.DefaultDataDir, "data directory (certificates, store, state)")
	fs.StringVar(&cfg.Listen, "listen", "", "API address HOST:PORT (HTTPS); other hosts and the CLI connect here")
	fs.StringVar(&cfg.PeerListen, "peer-listen", "", "store peer address HOST:PORT (embedded etcd; the next port serves store clients)")
	fs.StringVar(&cfg.StoreClientListen, "store-client-listen", "", "store client address HOST:PORT (default: --peer-listen's port + 1)")
	fs.BoolVar(&cfg.Init, "init", false, "create a new cluster with this host as its first node")
	fs.StringVar(&cfg.ClusterName, "cluster-name", agent.DefaultClusterName, "cluster name (with --init)")
	fs.IntVar(&cfg.StoreMembers, "store-members", agent.DefaultStoreMembers, "voting store members, 3 or 5 (with --init); later hosts are store clients")
	fs.StringVar(&cfg.JoinAddr, "join", "", "join the cluster of the agent at https://HOST:PORT")
	fs.StringVar(&cfg.JoinToken, "token", "", "join token (with --join)")
	fs.BoolVar(&cfg.Dev, "dev", false, "single-host development cluster on 127.0.0.1, everything defaulted")
	fs.StringVar(&endpoints, "store-endpoints", "", "use an external etcd: client URLs, comma-separated")
	fs.StringVar(&cfg.StoreCA, "store-ca", "", "external etcd: CA certificate file")
	fs.StringVar(&cfg.StoreCert, "store-cert", "", "external etcd: client certificate file")
	fs.StringVar(&cfg.StoreKey, "store-key", "", "external etcd: client key file")
	fs.DurationVar(&cfg.LeaseTTL, "lease-ttl", store.DefaultLeaseTTL, "a host counts as down this long after its last keepalive (min 2s)")
	fs.DurationVar(&cfg.KeepAlive, "keepalive", store.DefaultKeepAlive, "lease keepalive interval")
	fs.UintVar(&cfg.StoreTickMs, "store-heartbeat-ms", store.DefaultTickMs, "embedded etcd heartbeat interval, ms")
	fs.UintVar(&cfg.StoreElectionMs, "store-election-ms", store.DefaultElectionMs, "embedded etcd election timeout, ms")
	fs.StringVar(&cfg.Hypervisor, "hypervisor", "qemu", "hypervisor driver: qemu, libvirt, or none for a host that runs no guests")
	var hostOpts ha.HostOptions
	hostOpts.RegisterFlags(fs)
	fs.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return Usagef("%v", err)
	}
	if fs.NArg() > 0 {
		return Usagef("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
		return Usagef("--log-level %q: use debug, info, warn or error", logLevel)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: lvl}))
	if endpoints != "" {
		cfg.StoreEndpoints = strings.Split(endpoints, ",")
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if cfg.Dev {
		if err := prepareDev(&cfg, set); err != nil {
			return err
		}
	}
	if cfg.Listen == "" {
		return Usagef("--listen HOST:PORT is required (or use --dev)")
	}
	if cfg.PeerListen == "" && len(cfg.StoreEndpoints) == 0 {
		return Usagef("--peer-listen HOST:PORT is required unless --store-endpoints is given")
	}
	ha.Enable(ha.Options{Driver: hostOpts.Driver(), WatchdogDevice: hostOpts.WatchdogDevice})
	a, err := agent.New(cfg)
	if err != nil {
		return err
	}
	if err := a.Start(ctx); err != nil {
		return err
	}
	if tok := a.JoinToken(); tok != "" {
		printInit(env.Stdout, a, cfg)
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a.Stop(sctx)
	return nil
}

// prepareDev fills in the --dev defaults and starts from a fresh dev dir.
func prepareDev(cfg *agent.Config, set map[string]bool) error {
	if !set["node"] {
		cfg.Node = "dev"
	}
	if !set["data-dir"] {
		cfg.DataDir = client.DevDataDir()
	}
	if !set["listen"] {
		cfg.Listen = devListen
	}
	if !set["peer-listen"] {
		cfg.PeerListen = devPeerListen
	}
	if !set["store-members"] {
		cfg.StoreMembers = 1
	}
	cfg.Init = true
	// A dev cluster is throwaway: start afresh, but only over a previous
	// dev cluster's dir.
	b, err := os.ReadFile(filepath.Join(cfg.DataDir, "node.json"))
	if err == nil {
		var p struct {
			Dev bool `json:"dev"`
		}
		if json.Unmarshal(b, &p) != nil || !p.Dev {
			return fmt.Errorf("%s holds a non-dev node; pass another --data-dir for --dev", cfg.DataDir)
		}
		// Never clear the dir under a running dev agent.
		if f, err := os.Open(filepath.Join(cfg.DataDir, "lock")); err == nil {
			busy := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil
			f.Close()
			if busy {
				return fmt.Errorf("a dev agent is already running on %s; stop it first", cfg.DataDir)
			}
		}
		if err := os.RemoveAll(cfg.DataDir); err != nil {
			return fmt.Errorf("clear old dev data dir: %w", err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read dev data dir: %w", err)
	}
	return nil
}

func printInit(w io.Writer, a *agent.Agent, cfg agent.Config) {
	fmt.Fprintf(w, "Cluster %q created; node %q is up at %s\n", cfg.ClusterName, cfg.Node, a.APIURL())
	fmt.Fprintf(w, "Admin token (also in %s, mode 0600):\n  %s\n", filepath.Join(cfg.DataDir, "admin.token"), a.AdminToken())
	if cfg.Dev {
		fmt.Fprintf(w, "CLI on this host: haven status\n")
		return
	}
	lh, _, _ := net.SplitHostPort(cfg.Listen)
	_ = lh
	fmt.Fprintf(w, "Join other hosts (token valid %v) with:\n", api.DefaultJoinTokenTTL)
	fmt.Fprintf(w, "  haven agent --node NAME --data-dir %s --listen HOST:PORT --peer-listen HOST:PORT --join %s --token %s\n", client.DefaultDataDir, a.APIURL(), a.JoinToken())
}

// clientFlags are the connection flags of every command that uses the API.
type clientFlags struct {
	o      client.Options
	output string
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.o.Server, "server", "", "agent API URL (default $HAVEN_SERVER, else the local agent)")
	fs.StringVar(&c.o.Token, "token", "", "API token (default $HAVEN_TOKEN, else the local admin token)")
	fs.StringVar(&c.o.CAFile, "ca", "", "cluster CA certificate (default $HAVEN_CACERT, else the local agent's)")
	fs.StringVar(&c.output, "o", "table", "output format: table or json")
}

func (c *clientFlags) client(env *Env) (*client.Client, error) {
	if c.output != "table" && c.output != "json" {
		return nil, Usagef("-o %q: use table or json", c.output)
	}
	return client.FromOptions(c.o, env.Getenv)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func runTokenCreate(ctx context.Context, env *Env, args []string) error {
	fs := flag.NewFlagSet("token create", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	var cf clientFlags
	cf.register(fs)
	var req api.TokenRequest
	var role string
	fs.StringVar(&role, "role", "", "admin, operator, viewer or join")
	fs.StringVar(&req.Name, "name", "", "a label for the token")
	fs.StringVar(&req.TTL, "ttl", "", "lifetime such as 24h (join tokens default to 24h; others never expire)")
	if err := fs.Parse(args); err != nil {
		return Usagef("%v", err)
	}
	if role == "" {
		return Usagef("--role is required")
	}
	req.Role = store.Role(role)
	c, err := cf.client(env)
	if err != nil {
		return err
	}
	resp, err := c.CreateToken(ctx, req)
	if err != nil {
		return err
	}
	if cf.output == "json" {
		return printJSON(env.Stdout, resp)
	}
	fmt.Fprintln(env.Stdout, resp.Token)
	return nil
}

func runTokenList(ctx context.Context, env *Env, args []string) error {
	fs, cf := opsFlags("token list", env)
	_, c, err := cf.connect(env, fs, args, 0, "")
	if err != nil {
		return err
	}
	defer c.Close()
	ts, err := c.Tokens(ctx)
	if err != nil {
		return err
	}
	if cf.output == "json" {
		return printJSON(env.Stdout, ts)
	}
	tw := newTable(env.Stdout, "ID", "ROLE", "NAME", "CREATED", "EXPIRES")
	for _, t := range ts {
		tw.row(t.ID, string(t.Role), t.Name, fmtTime(t.Created), fmtTime(t.Expires))
	}
	return tw.flush()
}

func runTokenRevoke(ctx context.Context, env *Env, args []string) error {
	fs, cf := opsFlags("token revoke", env)
	pos, c, err := cf.connect(env, fs, args, 1, "one token ID")
	if err != nil {
		return err
	}
	defer c.Close()
	return c.RevokeToken(ctx, pos[0])
}
