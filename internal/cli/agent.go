package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/haven-ha/haven/internal/agent"
	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/api/client"
	"github.com/haven-ha/haven/internal/flagfile"
	"github.com/haven-ha/haven/internal/ha"
	"github.com/haven-ha/haven/internal/prio"
	"github.com/haven-ha/haven/internal/sdnotify"
	"github.com/haven-ha/haven/internal/store"
	"github.com/haven-ha/haven/internal/ui"
	"github.com/spf13/pflag"
)

func init() {
	Register(&Command{
		Path:  "agent",
		Short: "run the per-host Haven agent (creates, joins or rejoins a cluster)",
		Long: `Run the per-host Haven agent. The first host creates the cluster (--init)
and prints a join token; the others join it (--join URL --token T). An agent
restarted with the same --data-dir rejoins by itself. --dev runs a one-host
cluster on 127.0.0.1 with everything defaulted, to try Haven out.`,
		Example: `haven agent --dev
haven agent --node h1 --data-dir /var/lib/haven --listen 10.0.0.1:7400 --peer-listen 10.0.0.1:7401 --init
haven agent --node h2 --data-dir /var/lib/haven --listen 10.0.0.2:7400 --peer-listen 10.0.0.2:7401 --join https://10.0.0.1:7400 --token JOIN-TOKEN`,
		Flags: agentFlags,
	})
	Register(&Command{
		Path:    "token create",
		Short:   "create an API token or a join token",
		Example: "haven token create --role viewer --name grafana\nhaven token create --role join --ttl 1h",
		Flags:   tokenCreateFlags,
	})
	Register(&Command{
		Path:  "token list",
		Short: "list API and join tokens (without secrets)",
		Flags: tokenListFlags,
	})
	Register(&Command{
		Path:  "token revoke",
		Args:  "ID",
		Short: "revoke a token",
		Flags: tokenRevokeFlags,
	})
}

// Dev mode addresses.
const (
	devListen     = "127.0.0.1:7400"
	devPeerListen = "127.0.0.1:7401"
)

func agentFlags(fs *pflag.FlagSet) Runner {
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
	fs.BoolVar(&cfg.Witness, "witness", false, "join as a witness: a voting store member that counts for quorum and never runs guests (no hypervisor, no fence device, never fenced); a small VM or a Raspberry Pi outside the cluster")
	fs.StringVar(&cfg.StorageHeartbeat, "storage-heartbeat", "", "a directory on storage all hosts share (the guests' NFS): the agent also beats there, so a host cut off from the network but alive is reported isolated, not dead")
	fs.StringVar(&cfg.HeartbeatListen, "heartbeat-listen", "", "UDP address HOST:PORT for direct heartbeats between agents (default: the --listen host, port + 3; off: none, the lease alone tells this host's death)")
	fs.DurationVar(&cfg.HeartbeatDeadAfter, "heartbeat-dead-after", 0, "a peer with no heartbeat and no answer from its address this long is dead (default 1.5s; acted on only with fence devices)")
	fs.StringSliceVar(&cfg.FenceAgentDirs, "fence-agent-dir", nil, "a directory of fence agents of your own (fence_* programs), besides the search path; owned by root and writable by no one else; repeat or separate with commas for several")
	var hostOpts ha.HostOptions
	gfs := flag.NewFlagSet("agent", flag.ContinueOnError)
	hostOpts.RegisterFlags(gfs)
	fs.AddGoFlagSet(gfs)
	fs.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	var o agentFileOpts
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text (logfmt) or json")
	fs.IntVar(&o.nice, "nice", DefaultAgentNice, "the agent's CPU priority (nice value, -20..19; 0 leaves it): raised so that a saturated host still renews its lease and answers heartbeats; the guests it starts run at 0")
	fs.StringVar(&cfg.MetricsListen, "metrics-listen", "", "also serve /metrics, /healthz and /readyz over plain HTTP on HOST:PORT (they are always on the API too)")
	fs.StringVar(&o.configFile, "config", DefaultAgentConfig, "configuration file: a YAML mapping of these flags' names to values; flags given here override it")
	fs.BoolVar(&o.printConfig, "print-config", false, "print the settings that result from the config file and the flags, then exit")
	return func(ctx context.Context, env *Env, args []string) error {
		if err := wantN(args, 0, ""); err != nil {
			return err
		}
		if done, err := o.apply(env, fs); done || err != nil {
			return err
		}
		return runAgent(ctx, env, fs, cfg, hostOpts, endpoints, logLevel, o)
	}
}

// DefaultAgentConfig is the agent's configuration file, read when present.
const DefaultAgentConfig = "/etc/haven/agent.yaml"

// agentFileSkip are the agent flags a config file cannot set.
var agentFileSkip = []string{"config", "print-config", "help"}

type agentFileOpts struct {
	logFormat, configFile string
	printConfig           bool
	nice                  int
}

// DefaultAgentNice is the agent's default nice value (package prio).
const DefaultAgentNice = -10

// apply reads the config file into the flags the command line left unset,
// and prints the result for --print-config (done is then true).
func (o *agentFileOpts) apply(env *Env, fs *pflag.FlagSet) (done bool, err error) {
	if o.configFile != "" {
		// The default file is optional; one named on the command line is not.
		if _, err := flagfile.Load(o.configFile, !fs.Changed("config"), flagfile.PFlags(fs, agentFileSkip...)); err != nil {
			return true, err
		}
	}
	if !o.printConfig {
		return false, nil
	}
	out, err := flagfile.Print(flagfile.PSettings(fs, map[string]bool{"token": true}, agentFileSkip...))
	if err != nil {
		return true, err
	}
	fmt.Fprintf(env.Stdout, "# haven agent settings (config file %s, then flags)\n", o.configFile)
	_, err = env.Stdout.Write(out)
	return true, err
}

func runAgent(ctx context.Context, env *Env, fs *pflag.FlagSet, cfg agent.Config, hostOpts ha.HostOptions, endpoints, logLevel string, o agentFileOpts) error {
	logFormat := o.logFormat
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(logLevel)); err != nil {
		return Usagef("--log-level %q: use debug, info, warn or error", logLevel)
	}
	hopts := &slog.HandlerOptions{Level: lvl}
	switch logFormat {
	case "text":
		cfg.Logger = slog.New(slog.NewTextHandler(env.Stderr, hopts))
	case "json":
		cfg.Logger = slog.New(slog.NewJSONHandler(env.Stderr, hopts))
	default:
		return Usagef("--log-format %q: use text or json", logFormat)
	}
	if o.nice < -20 || o.nice > 19 {
		return Usagef("--nice %d: use a value from -20 to 19 (0 leaves the priority alone)", o.nice)
	}
	if o.nice != 0 {
		if err := prio.Set(o.nice); err != nil {
			cfg.Logger.Warn("CPU priority not raised: under a saturated CPU this host may miss its lease renewals", "op", "start", "nice", o.nice, "err", err)
		}
	}
	if endpoints != "" {
		cfg.StoreEndpoints = strings.Split(endpoints, ",")
	}
	set := map[string]bool{}
	fs.Visit(func(f *pflag.Flag) { set[f.Name] = true })
	if cfg.Witness && !set["hypervisor"] {
		cfg.Hypervisor = "none" // a witness runs no guests
	}
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
	// Every part of the agent, wired here: the HA plugin (host side,
	// shutdown, consoles, the manager's term) and the web UI.
	a, err := agent.New(cfg, agent.WithPlugins(
		ha.New(ha.Options{Driver: hostOpts.Driver(), WatchdogDevice: hostOpts.WatchdogDevice, RecordDir: hostOpts.RecordDir, HealthNetworks: hostOpts.HealthNetworks}),
		ui.New(),
	))
	if err != nil {
		return err
	}
	if err := a.Start(ctx); err != nil {
		return err
	}
	if tok := a.JoinToken(); tok != "" {
		printInit(env.Stdout, a, cfg)
	}
	// Under systemd (Type=notify): ready now, and the watchdog kept fed
	// while the agent's API answers its own health check.
	sd := sdnotify.FromEnv(env.Getenv)
	if err := sd.Notify(sdnotify.Ready, "STATUS=serving on "+a.APIURL()); err != nil {
		cfg.Logger.Warn("tell systemd the agent is ready", "op", "start", "err", err)
	}
	wctx, stopWatchdog := context.WithCancel(ctx)
	defer stopWatchdog()
	go sd.RunWatchdog(wctx, a.Healthy, func(err error) {
		cfg.Logger.Error("agent unhealthy: withholding the systemd watchdog keep-alive", "op", "watchdog", "err", err)
	})
	<-ctx.Done()
	_ = sd.Notify(sdnotify.Stopping)
	stopWatchdog()
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

// devStatusHint is the command that shows a dev cluster's status: the CLI
// finds the dev agent by itself only in its default data dir.
func devStatusHint(dataDir string) string {
	if filepath.Clean(dataDir) == filepath.Clean(client.DevDataDir()) {
		return "haven status"
	}
	if abs, err := filepath.Abs(dataDir); err == nil {
		dataDir = abs
	}
	return "HAVEN_DATA_DIR=" + dataDir + " haven status"
}

func printInit(w io.Writer, a *agent.Agent, cfg agent.Config) {
	fmt.Fprintf(w, "Cluster %q created; node %q is up at %s\n", cfg.ClusterName, cfg.Node, a.APIURL())
	fmt.Fprintf(w, "Admin token (also in %s, mode 0600):\n  %s\n", filepath.Join(cfg.DataDir, "admin.token"), a.AdminToken())
	if cfg.Dev {
		fmt.Fprintf(w, "CLI on this host: %s\n", devStatusHint(cfg.DataDir))
		return
	}
	fmt.Fprintf(w, "Join other hosts (token valid %v) with:\n", api.DefaultJoinTokenTTL)
	fmt.Fprintf(w, "  haven agent --node NAME --data-dir %s --listen HOST:PORT --peer-listen HOST:PORT --join %s --token %s\n", client.DefaultDataDir, a.APIURL(), a.JoinToken())
}

func tokenCreateFlags(fs *pflag.FlagSet) Runner {
	cf := addClientFlags(fs)
	var req api.TokenRequest
	var role string
	fs.StringVar(&role, "role", "", "admin, operator, viewer or join")
	fs.StringVar(&req.Name, "name", "", "a label for the token")
	fs.StringVar(&req.TTL, "ttl", "", "lifetime such as 24h (join tokens default to 24h; others never expire)")
	fs.IntVar(&req.Uses, "uses", 0, "join tokens: how many hosts it admits (default 1)")
	fs.StringSliceVar(&req.Allow, "allow", nil, "join tokens: addresses (IPs or DNS names) the joining host may have in its certificate besides the one it joins from")
	return func(ctx context.Context, env *Env, args []string) error {
		if err := wantN(args, 0, ""); err != nil {
			return err
		}
		if role == "" {
			return Usagef("--role is required")
		}
		req.Role = store.Role(role)
		c, err := cf.client(env)
		if err != nil {
			return err
		}
		defer c.Close()
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
}

var tokenListFlags = listCmd((*client.Client).Tokens, []string{"ID", "ROLE", "NAME", "CREATED", "EXPIRES"},
	func(t api.TokenInfo) []string {
		return []string{t.ID, string(t.Role), t.Name, fmtTime(t.Created), fmtTime(t.Expires)}
	})

func tokenRevokeFlags(fs *pflag.FlagSet) Runner {
	cf := addClientFlags(fs)
	return func(ctx context.Context, env *Env, args []string) error {
		c, err := cf.connect(env, args, 1, "one token ID")
		if err != nil {
			return err
		}
		defer c.Close()
		return c.RevokeToken(ctx, args[0])
	}
}
