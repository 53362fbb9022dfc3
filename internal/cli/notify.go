package cli

// `haven notify ...`: the webhooks that hear of fences, failed hosts and
// guests, and admission warnings at once.

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/pflag"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/api/client"
	"github.com/haven-ha/haven/internal/notify"
)

func init() {
	groupShort["notify"] = "notifications: webhooks for fences, failed hosts and guests, admission warnings"
	Register(&Command{Path: "notify show", Short: "show the notification webhooks", Flags: cmdNotifyShow})
	Register(&Command{
		Path:  "notify set",
		Short: "set the notification webhooks (replaces them; none to switch notifications off)",
		Long: `Set the webhooks that receive, as a JSON POST, each event of the classes
they ask for: fence (a host fenced, or a fence that failed), node-failed,
guest-failed (a guest that failed to start or stop, or that the manager gave
up on), admission (admission-control warnings) and quorum (the store lost
quorum: sent by each agent that notices, once per incident, from the
configuration it caches, as no manager runs then). The body is
{"cluster", "class", "event": {"at", "kind", "node", "guest", "msg"}, "text"}.`,
		Example: `haven notify set --webhook https://alerts.example.com/haven
haven notify set --webhook https://chat.example.com/hook --classes fence,node-failed --auth "Bearer s3cret"
haven notify set                 # no webhook: notifications off`,
		Flags: cmdNotifySet,
	})
	Register(&Command{Path: "notify test", Short: "send a test notification to every webhook and say which received it", Flags: cmdNotifyTest})
}

var cmdNotifyShow = getCmd(func(c *client.Client, ctx context.Context) (notify.Config, error) {
	var nc notify.Config
	return nc, c.Do(ctx, "GET", "/api/v1/notify", nil, &nc)
}, func(w io.Writer, nc notify.Config) error {
	if len(nc.Webhooks) == 0 {
		fmt.Fprintln(w, "No notification webhook; set one with `haven notify set --webhook URL`.")
		return nil
	}
	tw := newTable(w, "WEBHOOK", "CLASSES", "AUTH")
	for _, h := range nc.Webhooks {
		classes := strings.Join(h.Classes, ",")
		if classes == "" {
			classes = "all"
		}
		auth := ""
		if h.Header != "" {
			auth = "set"
		}
		tw.row(h.URL, classes, auth)
	}
	return tw.flush()
})

func cmdNotifySet(fs *pflag.FlagSet) Runner {
	cf := addClientFlags(fs)
	var hooks []string
	var classes, auth string
	fs.StringArrayVar(&hooks, "webhook", nil, "a webhook URL (repeat for more)")
	fs.StringVar(&classes, "classes", "", "the classes the webhooks get, comma-separated: "+strings.Join(notify.Classes, ", ")+" (default all)")
	fs.StringVar(&auth, "auth", "", `Authorization header sent with each POST, such as "Bearer TOKEN"`)
	return func(ctx context.Context, env *Env, args []string) error {
		if err := wantN(args, 0, ""); err != nil {
			return err
		}
		nc := notify.Config{Webhooks: []notify.Webhook{}}
		var cl []string
		if classes != "" {
			cl = strings.Split(classes, ",")
		}
		for _, h := range hooks {
			nc.Webhooks = append(nc.Webhooks, notify.Webhook{URL: h, Classes: cl, Header: auth})
		}
		if err := nc.Check(); err != nil {
			return Usagef("%v", err)
		}
		c, err := cf.client(env)
		if err != nil {
			return err
		}
		defer c.Close()
		if err := c.Do(ctx, "PUT", "/api/v1/notify", nc, &nc); err != nil {
			return err
		}
		return cf.printf(env, nc, "%d notification webhooks set; try them with `haven notify test`", len(nc.Webhooks))
	}
}

var cmdNotifyTest = getCmd(func(c *client.Client, ctx context.Context) (api.NotifyTestResult, error) {
	var res api.NotifyTestResult
	return res, c.Do(ctx, "POST", "/api/v1/notify/test", struct{}{}, &res)
}, func(w io.Writer, res api.NotifyTestResult) error {
	failed := 0
	for _, r := range res.Results {
		if r.OK {
			fmt.Fprintf(w, "%s: received\n", r.URL)
		} else {
			failed++
			fmt.Fprintf(w, "%s: NOT received: %s\n", r.URL, r.Error)
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d webhooks did not receive the test", failed, len(res.Results))
	}
	return nil
})
