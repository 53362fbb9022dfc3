package cli

// `haven notify ...`: the webhooks that hear of fences, failed hosts and
// guests, and admission warnings at once.

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/pflag"

	"github.com/haven-ha/haven/internal/api"
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

func cmdNotifyShow(fs *pflag.FlagSet) Runner {
	cf := addClientFlags(fs)
	return func(ctx context.Context, env *Env, args []string) error {
		c, err := cf.connect(env, args, 0, "")
		if err != nil {
			return err
		}
		defer c.Close()
		var nc notify.Config
		if err := c.Do(ctx, "GET", "/api/v1/notify", nil, &nc); err != nil {
			return err
		}
		if cf.output == "json" {
			return printJSON(env.Stdout, nc)
		}
		if len(nc.Webhooks) == 0 {
			fmt.Fprintln(env.Stdout, "No notification webhook; set one with `haven notify set --webhook URL`.")
			return nil
		}
		tw := newTable(env.Stdout, "WEBHOOK", "CLASSES", "AUTH")
		for _, w := range nc.Webhooks {
			classes := strings.Join(w.Classes, ",")
			if classes == "" {
				classes = "all"
			}
			auth := ""
			if w.Header != "" {
				auth = "set"
			}
			tw.row(w.URL, classes, auth)
		}
		return tw.flush()
	}
}

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
		if cf.output == "json" {
			return printJSON(env.Stdout, nc)
		}
		fmt.Fprintf(env.Stdout, "%d notification webhooks set; try them with `haven notify test`\n", len(nc.Webhooks))
		return nil
	}
}

func cmdNotifyTest(fs *pflag.FlagSet) Runner {
	cf := addClientFlags(fs)
	return func(ctx context.Context, env *Env, args []string) error {
		c, err := cf.connect(env, args, 0, "")
		if err != nil {
			return err
		}
		defer c.Close()
		var res api.NotifyTestResult
		if err := c.Do(ctx, "POST", "/api/v1/notify/test", struct{}{}, &res); err != nil {
			return err
		}
		if cf.output == "json" {
			return printJSON(env.Stdout, res)
		}
		failed := 0
		for _, r := range res.Results {
			if r.OK {
				fmt.Fprintf(env.Stdout, "%s: received\n", r.URL)
			} else {
				failed++
				fmt.Fprintf(env.Stdout, "%s: NOT received: %s\n", r.URL, r.Error)
			}
		}
		if failed > 0 {
			return fmt.Errorf("%d of %d webhooks did not receive the test", failed, len(res.Results))
		}
		return nil
	}
}
