package cli

// `haven guest console NAME`: a guest's serial console, like virsh console.
// Self-contained: the command, its terminal handling and its escape key.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"
)

// consoleEscape ends a console session: Ctrl-] as in virsh and telnet.
const consoleEscape = 0x1d

func init() {
	Register(&Command{Path: "guest console", Args: "NAME", Complete: completeGuestThenNode,
		Short: "attach to a running guest's serial console (Ctrl-] leaves), from any host",
		Long: "Attaches to the guest's first serial port through the agent of the host that runs it " +
			"(any agent forwards the session). Needs an operator or admin token; every session is in the audit log. " +
			"Ctrl-] ends the session.",
		Example: "haven guest console web1", Flags: cmdGuestConsole})
}

func cmdGuestConsole(fs *pflag.FlagSet) Runner {
	cf := addClientFlags(fs)
	return func(ctx context.Context, env *Env, args []string) error {
		c, err := cf.connect(env, args, 1, "one guest name")
		if err != nil {
			return err
		}
		defer c.Close()
		con, err := c.OpenConsole(ctx, args[0])
		if err != nil {
			return err
		}
		defer con.Close()
		fmt.Fprintf(env.Stderr, "Connected to the console of %s (escape character is ^])\r\n", args[0])
		if f, ok := env.Stdin.(*os.File); ok {
			if restore, err := rawTerminal(int(f.Fd())); err == nil {
				defer restore()
			}
		}
		out := make(chan error, 1)
		go func() {
			_, err := io.Copy(env.Stdout, con)
			out <- err
		}()
		in := make(chan error, 1)
		go func() { in <- copyUntilEscape(con, env.Stdin) }()
		select {
		case err := <-out:
			if err != nil {
				return fmt.Errorf("console of %s: %w", args[0], err)
			}
			fmt.Fprintf(env.Stderr, "\r\nThe console of %s closed.\r\n", args[0])
			return nil
		case err := <-in:
			fmt.Fprintf(env.Stderr, "\r\n")
			if err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("console of %s: %w", args[0], err)
			}
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// copyUntilEscape types what r gives on w until the escape key or EOF.
func copyUntilEscape(w io.Writer, r io.Reader) error {
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			esc := false
			for i, b := range chunk {
				if b == consoleEscape {
					chunk, esc = chunk[:i], true
					break
				}
			}
			if len(chunk) > 0 {
				if _, werr := w.Write(chunk); werr != nil {
					return werr
				}
			}
			if esc {
				return nil
			}
		}
		if err != nil {
			return err
		}
	}
}

// rawTerminal puts the terminal fd in raw mode (keys go to the guest as
// typed, Ctrl-C included) and returns how to restore it.
func rawTerminal(fd int) (func(), error) {
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, err // not a terminal
	}
	t := *old
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB
	t.Cflag |= unix.CS8
	t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &t); err != nil {
		return nil, err
	}
	return func() { unix.IoctlSetTermios(fd, unix.TCSETS, old) }, nil
}
