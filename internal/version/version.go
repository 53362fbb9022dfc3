// Package version holds the version of the haven binary. Release builds
// (scripts/package.sh) stamp it from the git tag or commit with
//
//	-ldflags "-X github.com/haven-ha/haven/internal/version.Version=v1.2.3"
//
// A build without the stamp falls back to what the Go toolchain recorded
// (debug.ReadBuildInfo): the module version for `go install ...@v1.2.3`,
// else the VCS revision of the checkout it was built from.
package version

import (
	"runtime/debug"
	"strings"
	"sync"
)

// Version is set by the linker for release builds; empty otherwise. Read it
// through String.
var Version = ""

// Commit may be set by the linker to the full commit hash.
var Commit = ""

var (
	once     sync.Once
	resolved string
	commit   string
)

// String is this build's version: the stamped one, else one derived from
// the build info ("0.0.0-dev+<rev12>[.dirty]"), else "0.0.0-dev".
func String() string {
	once.Do(resolve)
	return resolved
}

// Revision is the VCS commit this binary was built from, when known.
func Revision() string {
	once.Do(resolve)
	return commit
}

func resolve() {
	resolved, commit = Version, Commit
	info, ok := debug.ReadBuildInfo()
	if ok {
		resolved, commit = fromBuildInfo(Version, Commit, info)
		return
	}
	if resolved == "" {
		resolved = "0.0.0-dev"
	}
}

// fromBuildInfo picks the version and commit from the stamp, else info.
func fromBuildInfo(stamp, stampCommit string, info *debug.BuildInfo) (string, string) {
	var rev string
	dirty := false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if stampCommit != "" {
		rev = stampCommit
	}
	if stamp != "" {
		return stamp, rev
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return strings.TrimPrefix(v, "v"), rev
	}
	v := "0.0.0-dev"
	if rev != "" {
		v += "+" + rev[:min(12, len(rev))]
		if dirty {
			v += ".dirty"
		}
	}
	return v, rev
}
