package client

import (
	"fmt"
	"os"
	"syscall"
)

// CheckTrusted checks that path (a file, or a directory when dir) can be
// trusted by this process: not a symlink, owned by root or by this process's
// user, and not writable by group or others. Any local user can write to
// /tmp: a local.json, CA or token file planted there must not be believed
// (it would hand root's admin token to the planter's server), and an agent
// must not adopt a data dir someone else made.
func CheckTrusted(path string, dir bool) error {
	st, err := os.Lstat(path)
	if err != nil {
		return err
	}
	switch {
	case st.Mode()&os.ModeSymlink != 0:
		return fmt.Errorf("%s is a symlink: not trusted", path)
	case dir && !st.IsDir():
		return fmt.Errorf("%s is not a directory", path)
	case !dir && !st.Mode().IsRegular():
		return fmt.Errorf("%s is not a regular file", path)
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	me := uint32(os.Geteuid())
	if sys.Uid != 0 && sys.Uid != me {
		return fmt.Errorf("%s is owned by uid %d, not by root or you (uid %d): not trusted; remove it", path, sys.Uid, me)
	}
	if st.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s is writable by others (mode %04o): not trusted; chmod go-w it", path, st.Mode().Perm())
	}
	return nil
}
