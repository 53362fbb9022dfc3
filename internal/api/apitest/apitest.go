// Package apitest starts a real single-host Haven agent in-process (with its
// embedded etcd store) for tests of the API, its client and the CLI, with
// tokens of every role. It is test support only: nothing in the daemon
// imports it.
package apitest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/agent"
	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/api/client"
	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/manager"
	"github.com/haven-ha/haven/internal/model"
	"github.com/haven-ha/haven/internal/pki"
	"github.com/haven-ha/haven/internal/savedstate"
	"github.com/haven-ha/haven/internal/store"
	"github.com/haven-ha/haven/internal/ui"
)

// Agent is a running agent and what a test needs to talk to it.
type Agent struct {
	A       *agent.Agent
	Dir     string
	CAFile  string
	Cluster *cluster.Store
	// Tokens by role: "admin", "operator", "viewer".
	Tokens map[string]string
	// Clients by role, plus "none" (no token) and "bad" (a wrong token).
	Clients map[string]*client.Client

	cancel context.CancelFunc
}

// Start starts an agent named node with a fresh cluster in dir (a temporary
// directory when empty), with the web UI and the given plugins, as
// cmd/haven wires an agent. Stop it with Stop.
func Start(node, dir string, plugins ...agent.Plugin) (*Agent, error) {
	if dir == "" {
		d, err := os.MkdirTemp("", "haven-apitest-")
		if err != nil {
			return nil, err
		}
		dir = d
	}
	ports := make([]string, 3)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ports[i] = l.Addr().String()
		l.Close()
	}
	a, err := agent.New(agent.Config{
		Node: node, DataDir: filepath.Join(dir, "data"), Listen: ports[0], PeerListen: ports[1], StoreClientListen: ports[2],
		Init: true, StoreMembers: 1, ClusterName: "test", FenceAgentDirs: []string{fenceTestdata()},
	}, agent.WithPlugins(append([]agent.Plugin{ui.New()}, plugins...)...))
	if err != nil {
		return nil, err
	}
	// Start's context is the agent's lifetime for its plugins (it ends
	// the event streams), so it lives until Stop.
	ctx, cancel := context.WithCancel(context.Background())
	if err := a.Start(ctx); err != nil {
		cancel()
		return nil, err
	}
	t := &Agent{A: a, Dir: dir, Cluster: cluster.New(a.Store()), Tokens: map[string]string{"admin": a.AdminToken()}, Clients: map[string]*client.Client{}, cancel: cancel}
	t.CAFile, _, _ = a.TLSFiles()
	caPEM, err := os.ReadFile(t.CAFile)
	if err != nil {
		t.Stop()
		return nil, err
	}
	tlsCfg, err := pki.ClientTLS(caPEM, nil, nil)
	if err != nil {
		t.Stop()
		return nil, err
	}
	admin := client.New(a.APIURL(), a.AdminToken(), tlsCfg)
	for _, role := range []store.Role{store.RoleOperator, store.RoleViewer} {
		tr, err := admin.CreateToken(ctx, api.TokenRequest{Role: role, Name: "test " + string(role)})
		if err != nil {
			t.Stop()
			return nil, err
		}
		t.Tokens[string(role)] = tr.Token
	}
	for role, tok := range t.Tokens {
		t.Clients[role] = client.New(a.APIURL(), tok, tlsCfg)
	}
	t.Clients["none"] = client.New(a.APIURL(), "", tlsCfg)
	t.Clients["bad"] = client.New(a.APIURL(), pki.NewAPIToken().String(), tlsCfg)
	return t, nil
}

// URL is the agent's API URL.
func (t *Agent) URL() string { return t.A.APIURL() }

// Stop stops the agent and removes its directory.
func (t *Agent) Stop() {
	t.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	t.A.Stop(ctx)
	for _, c := range t.Clients {
		c.Close()
	}
	os.RemoveAll(t.Dir)
}

// RegisterNode registers an extra (offline) host, as a join would.
func (t *Agent) RegisterNode(ctx context.Context, name string) error {
	return t.A.Store().RegisterNode(ctx, store.NodeRecord{Name: name, Registered: time.Now().UTC()}, store.OpNodeLevel(name, model.FeatureLevel))
}

// SaveState writes s as the manager's saved state, as the manager does
// after each step.
func (t *Agent) SaveState(ctx context.Context, s *manager.State) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	// In the whole-state format, replacing whatever a manager saved.
	_, err = t.A.Store().Client().Txn(ctx).Then(
		clientv3.OpDelete(savedstate.KeyHead),
		clientv3.OpDelete(savedstate.PrefixBase, clientv3.WithPrefix()),
		clientv3.OpDelete(savedstate.PrefixLog, clientv3.WithPrefix()),
		clientv3.OpPut(savedstate.KeyLegacy, string(b)),
	).Commit()
	return err
}

// CommandHandler decides a queued command's outcome for PlayManager:
// nil carries it out, ErrLeave leaves it pending, any other error refuses
// it with that reason.
type CommandHandler func(c cluster.Command) error

// ErrLeave makes PlayManager leave a command pending.
var ErrLeave = errors.New("leave the command pending")

// PlayManager stands in for the manager loop's command handling, which a
// test of the API runs without: it marks every queued command done with
// handle's error, until ctx ends. It writes the records directly (the real
// manager writes them through its leadership, control.ManagerWriter).
// wait waits for it to end after ctx and returns the first store error it
// met.
func (t *Agent) PlayManager(ctx context.Context, handle CommandHandler) (wait func() error) {
	cli := t.A.Store().Client()
	var wg sync.WaitGroup
	var firstErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			cmds, rev, err := t.Cluster.PendingCommands(ctx)
			if err != nil {
				return
			}
			for _, c := range cmds {
				err := handle(c)
				if errors.Is(err, ErrLeave) {
					continue
				}
				c.Done = true
				if err != nil {
					c.Error = err.Error()
				}
				b, _ := json.Marshal(c)
				if _, err := cli.Put(ctx, cluster.KeyCommand(c.ID), string(b)); err != nil && ctx.Err() == nil && firstErr == nil {
					firstErr = fmt.Errorf("mark command %s done: %w", c.ID, err)
				}
			}
			wctx, cancel := context.WithCancel(ctx)
			wch := cli.Watch(wctx, cluster.PrefixCommands, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
			for wr := range wch {
				if hasCreate(wr.Events) {
					break
				}
			}
			cancel()
		}
	}()
	return func() error {
		wg.Wait()
		return firstErr
	}
}

func hasCreate(evs []*clientv3.Event) bool {
	for _, e := range evs {
		if e.IsCreate() {
			return true
		}
	}
	return false
}

// fenceTestdata is internal/fence/testdata, where the test fence agent
// fence_spy is: the agent's --fence-agent-dir.
func fenceTestdata() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "fence", "testdata")
}
