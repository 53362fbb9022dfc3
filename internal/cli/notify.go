package cli

// `haven notify ...`: the webhooks and the mail receiver that hear of
// fences, failed hosts and guests, and admission warnings at once.

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
	groupShort["notify"] = "notifications: webhooks and mail for fences, failed hosts and guests, admission warnings"
	Register(&Command{Path: "notify show", Short: "show the notification webhooks and mail receiver", Flags: cmdNotifyShow})
	Register(&Command{
		Path:  "notify set",
		Short: "set the notification webhooks and mail (replaces them; none to switch notifications off)",
		Long: `Set the webhooks that receive, as a JSON POST, each event of the classes
they ask for: fence (a host fenced, or a fence that failed), node-failed,
guest-failed (a guest that failed to start or stop, or that the manager gave
up on), admission (admission-control warnings) and quorum (the store lost
quorum: sent by each agent that notices, once per incident, from the
configuration it caches, as no manager runs then). The body is
{"cluster", "class", "event": {"at", "kind", "node", "guest", "msg"}, "text"}.

With --mail-server the same notifications go by mail (SMTP) to the
--mail-to addresses: the subject is the event's text, the body its fields.
--mail-tls is starttls (default, port 587), tls (port 465) or none (a local
relay, which takes no password). The password is read from stdin
(--mail-password-stdin), sealed in the store and never shown; without it,
the stored password is kept if the server and user are the same.`,
		Example: `haven notify set --webhook https://alerts.example.com/haven
haven notify set --webhook https://chat.example.com/hook --classes fence,node-failed --auth "Bearer s3cret"
echo "$PW" | haven notify set --mail-server smtp.example.com:587 --mail-user haven --mail-password-stdin \
    --mail-from haven@example.com --mail-to ops@example.com,oncall@example.com --mail-classes fence,quorum
haven notify set --mail-server 127.0.0.1:25 --mail-tls none --mail-from haven@h1.lan --mail-to root@h1.lan
haven notify set                 # no webhook, no mail: notifications off`,
		Flags: cmdNotifySet,
	})
	Register(&Command{Path: "notify test", Short: "send a test notification to every webhook and the mail receiver, and say which received it", Flags: cmdNotifyTest})
}

var cmdNotifyShow = getCmd(func(c *client.Client, ctx context.Context) (notify.Config, error) {
	var nc notify.Config
	return nc, c.Do(ctx, "GET", "/api/v1/notify", nil, &nc)
}, func(w io.Writer, nc notify.Config) error {
	if nc.Empty() {
		fmt.Fprintln(w, "No notification webhook or mail; set one with `haven notify set --webhook URL` or `--mail-server HOST:PORT`.")
		return nil
	}
	if len(nc.Webhooks) > 0 {
		tw := newTable(w, "WEBHOOK", "CLASSES", "AUTH")
		for _, h := range nc.Webhooks {
			auth := ""
			if h.Header != "" {
				auth = "set"
			}
			tw.row(h.URL, classList(h.Classes), auth)
		}
		if err := tw.flush(); err != nil {
			return err
		}
	}
	if m := nc.Mail; m != nil {
		tls := m.TLS
		if tls == "" {
			tls = notify.TLSStartTLS
		}
		user := "none"
		if m.User != "" {
			user = m.User + " (password set)"
		}
		fmt.Fprintf(w, "Mail: to %s, from %s, via %s (%s), user %s, classes %s\n", strings.Join(m.To, ", "), m.From, m.Server, tls, user, classList(m.Classes))
	}
	return nil
})

func classList(cl []string) string {
	if len(cl) == 0 {
		return "all"
	}
	return strings.Join(cl, ",")
}

func cmdNotifySet(fs *pflag.FlagSet) Runner {
	cf := addClientFlags(fs)
	var hooks []string
	var classes, auth string
	fs.StringArrayVar(&hooks, "webhook", nil, "a webhook URL (repeat for more)")
	fs.StringVar(&classes, "classes", "", "the classes the webhooks get, comma-separated: "+strings.Join(notify.Classes, ", ")+" (default all)")
	fs.StringVar(&auth, "auth", "", `Authorization header sent with each POST, such as "Bearer TOKEN"`)
	var m notify.Mail
	var mailTo, mailClasses string
	var pwStdin bool
	fs.StringVar(&m.Server, "mail-server", "", "send the notifications by mail through this SMTP relay, host:port")
	fs.StringVar(&m.TLS, "mail-tls", notify.TLSStartTLS, "how to reach the relay: "+strings.Join(notify.TLSModes, ", "))
	fs.StringVar(&m.User, "mail-user", "", "SMTP user (PLAIN authentication), with --mail-password-stdin")
	fs.BoolVar(&pwStdin, "mail-password-stdin", false, "read the SMTP password from stdin (without it the stored one is kept)")
	fs.StringVar(&m.From, "mail-from", "", "the sender address, such as haven@example.com")
	fs.StringVar(&mailTo, "mail-to", "", "the recipients, comma-separated")
	fs.StringVar(&mailClasses, "mail-classes", "", "the classes mailed, comma-separated (default all)")
	return func(ctx context.Context, env *Env, args []string) error {
		if err := wantN(args, 0, ""); err != nil {
			return err
		}
		nc := notify.Config{Webhooks: []notify.Webhook{}}
		for _, h := range hooks {
			nc.Webhooks = append(nc.Webhooks, notify.Webhook{URL: h, Classes: splitList(classes), Header: auth})
		}
		if m.Server != "" {
			m.To, m.Classes = splitList(mailTo), splitList(mailClasses)
			if m.User != "" {
				m.Password = notify.Redacted // the stored one, if the server and user are the same
				if pwStdin {
					pw, err := readPassword(env, true, "", false)
					if err != nil {
						return err
					}
					m.Password = pw
				}
			}
			nc.Mail = &m
		} else if fs.Changed("mail-to") || fs.Changed("mail-from") || fs.Changed("mail-user") || pwStdin {
			return Usagef("--mail-server: give the SMTP relay (host:port) to send mail")
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
		mail := "no mail"
		if nc.Mail != nil {
			mail = "mail to " + strings.Join(nc.Mail.To, ", ")
		}
		return cf.printf(env, nc, "%d notification webhooks set, %s; try them with `haven notify test`", len(nc.Webhooks), mail)
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
		return fmt.Errorf("%d of %d receivers did not receive the test", failed, len(res.Results))
	}
	return nil
})
