package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/pflag"

	"github.com/haven-ha/haven/internal/api/client"
)

// clientFlags are the connection and output flags of every command that
// uses the API.
type clientFlags struct {
	o      client.Options
	output string
	config string
}

// addClientFlags adds --server, --token, --ca, --config and -o to fs.
func addClientFlags(fs *pflag.FlagSet) *clientFlags {
	c := &clientFlags{}
	fs.StringVar(&c.o.Server, "server", "", "agent API URL or URLs, comma-separated (default $HAVEN_SERVER, the client config, else the local agent)")
	fs.StringVar(&c.o.Token, "token", "", "API token (default $HAVEN_TOKEN, the client config's token file, else the local admin token)")
	fs.StringVar(&c.o.CAFile, "ca", "", "cluster CA certificate file (default $HAVEN_CACERT, the client config, else the local agent's)")
	fs.StringVar(&c.config, "config", "", "client config file (default $HAVEN_CONFIG, else ~/.config/haven/config.yaml if it exists)")
	fs.StringVarP(&c.output, "output", "o", "table", "output format: table or json")
	return c
}

// client checks the output format and opens the API client; the caller
// closes it.
func (c *clientFlags) client(env *Env) (*client.Client, error) {
	if c.output != "table" && c.output != "json" {
		return nil, Usagef("-o %q: use table or json", c.output)
	}
	o, err := c.options(env)
	if err != nil {
		return nil, err
	}
	return client.FromOptions(o, env.Getenv)
}

// connect checks there are exactly n positional arguments (what names
// them in the usage error) and opens the API client; the caller closes it.
func (c *clientFlags) connect(env *Env, args []string, n int, what string) (*client.Client, error) {
	if err := wantN(args, n, what); err != nil {
		return nil, err
	}
	return c.client(env)
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }
func (l *listFlag) Type() string       { return "string" }

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printJSONLine writes v as one line of JSON (for streams).
func printJSONLine(env *Env, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(env.Stdout, "%s\n", b)
	return err
}
