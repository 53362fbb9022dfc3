package cli

// `haven user ...`: the people who may log in to the web UI, with their
// roles. Passwords are read from the terminal without echo, or from stdin
// with --password-stdin.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/haven-ha/haven/internal/api"
	"github.com/haven-ha/haven/internal/api/client"
	"github.com/haven-ha/haven/internal/store"
)

func init() {
	Register(&Command{
		Path:    "user add",
		Args:    "NAME --role admin|operator|viewer",
		Short:   "add a person who may log in to the web UI",
		Example: "haven user add ann --role operator            # asks for the password\necho \"$PW\" | haven user add bob --role viewer --password-stdin",
		Flags:   cmdUserAdd,
	})
	Register(&Command{
		Path:  "user list",
		Short: "list web UI users and their roles",
		Flags: cmdUserList,
	})
	Register(&Command{
		Path:    "user set",
		Args:    "NAME",
		Short:   "change a web UI user's role or password",
		Example: "haven user set ann --role admin\nhaven user set ann --password",
		Flags:   cmdUserSet,
	})
	Register(&Command{
		Path:    "user remove",
		Args:    "NAME",
		Short:   "remove a web UI user (their sessions end at once)",
		Example: "haven user remove bob",
		Flags:   cmdUserRemove,
	})
}

func cmdUserAdd(fs *pflag.FlagSet) Runner {
	cf := addClientFlags(fs)
	role := fs.String("role", "", "admin, operator or viewer")
	fromStdin := fs.Bool("password-stdin", false, "read the password from the first line of stdin")
	return func(ctx context.Context, env *Env, pos []string) error {
		if len(pos) != 1 {
			return Usagef("give one user name")
		}
		if *role == "" {
			return Usagef("--role is required: admin, operator or viewer")
		}
		pw, err := readPassword(env, *fromStdin, "Password for "+pos[0]+": ", true)
		if err != nil {
			return err
		}
		c, err := cf.client(env)
		if err != nil {
			return err
		}
		defer c.Close()
		var u api.UserInfo
		if err := c.Do(ctx, "POST", "/api/v1/users", api.UserRequest{Name: pos[0], Role: store.Role(*role), Password: pw}, &u); err != nil {
			return fmt.Errorf("add user %q: %w", pos[0], err)
		}
		return cf.printf(env, u, "User %q added with role %s; they can log in to the web UI at any agent's https://HOST:PORT/", u.Name, u.Role)
	}
}

var cmdUserList = listCmd(func(c *client.Client, ctx context.Context) ([]api.UserInfo, error) {
	var us []api.UserInfo
	if err := c.Do(ctx, "GET", "/api/v1/users", nil, &us); err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return us, nil
}, []string{"NAME", "ROLE", "CREATED", "UPDATED"},
	func(u api.UserInfo) []string {
		return []string{u.Name, string(u.Role), fmtTime(u.Created), fmtTime(u.Updated)}
	})

func cmdUserSet(fs *pflag.FlagSet) Runner {
	cf := addClientFlags(fs)
	role := fs.String("role", "", "new role: admin, operator or viewer")
	newPW := fs.Bool("password", false, "set a new password (asked on the terminal)")
	fromStdin := fs.Bool("password-stdin", false, "set a new password read from the first line of stdin")
	return func(ctx context.Context, env *Env, pos []string) error {
		if len(pos) != 1 {
			return Usagef("give one user name")
		}
		req := api.UserRequest{Role: store.Role(*role)}
		if *newPW || *fromStdin {
			var err error
			if req.Password, err = readPassword(env, *fromStdin, "New password for "+pos[0]+": ", true); err != nil {
				return err
			}
		}
		if req.Role == "" && req.Password == "" {
			return Usagef("nothing to change: give --role and/or --password")
		}
		c, err := cf.client(env)
		if err != nil {
			return err
		}
		defer c.Close()
		var u api.UserInfo
		if err := c.Do(ctx, "PUT", "/api/v1/users/"+url.PathEscape(pos[0]), req, &u); err != nil {
			return fmt.Errorf("change user %q: %w", pos[0], err)
		}
		return cf.printf(env, u, "User %q: role %s", u.Name, u.Role)
	}
}

func cmdUserRemove(fs *pflag.FlagSet) Runner {
	cf := addClientFlags(fs)
	return func(ctx context.Context, env *Env, pos []string) error {
		c, err := cf.connect(env, pos, 1, "one user name")
		if err != nil {
			return err
		}
		defer c.Close()
		if err := c.Do(ctx, "DELETE", "/api/v1/users/"+url.PathEscape(pos[0]), nil, nil); err != nil {
			return fmt.Errorf("remove user %q: %w", pos[0], err)
		}
		return nil
	}
}

// readPassword reads a password from stdin's first line, or from the
// terminal without echo (twice when confirm is set).
func readPassword(env *Env, fromStdin bool, prompt string, confirm bool) (string, error) {
	if fromStdin {
		line, err := bufio.NewReader(env.Stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("read password from stdin: %w", err)
		}
		pw := strings.TrimRight(line, "\r\n")
		if pw == "" {
			return "", errors.New("no password on stdin: pipe it in, as in `echo \"$PW\" | haven user add NAME --role viewer --password-stdin`")
		}
		return pw, nil
	}
	f, ok := env.Stdin.(*os.File)
	if !ok || !isTerminal(f) {
		return "", errors.New("stdin is not a terminal: pass --password-stdin and pipe the password in")
	}
	pw, err := readNoEcho(f, env.Stderr, prompt)
	if err != nil {
		return "", err
	}
	if confirm {
		again, err := readNoEcho(f, env.Stderr, "Again: ")
		if err != nil {
			return "", err
		}
		if again != pw {
			return "", errors.New("the two passwords differ; try again")
		}
	}
	return pw, nil
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func readNoEcho(f *os.File, w io.Writer, prompt string) (string, error) {
	fd := int(f.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	quiet := *old
	quiet.Lflag &^= unix.ECHO
	quiet.Lflag |= unix.ICANON | unix.ISIG
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &quiet); err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	defer func() {
		_ = unix.IoctlSetTermios(fd, unix.TCSETS, old)
		fmt.Fprintln(w)
	}()
	fmt.Fprint(w, prompt)
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read password: %w", err)
	}
	return strings.TrimRight(line, "\r\n"), nil
}
