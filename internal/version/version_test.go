package version

import (
	"runtime/debug"
	"testing"
)

func TestFromBuildInfo(t *testing.T) {
	vcs := func(rev string, dirty bool) []debug.BuildSetting {
		d := "false"
		if dirty {
			d = "true"
		}
		return []debug.BuildSetting{{Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: d}}
	}
	for _, tc := range []struct {
		name, stamp, mainVer string
		settings             []debug.BuildSetting
		want, wantRev        string
	}{
		{"stamp wins", "1.2.3", "(devel)", vcs("0123456789abcdef0123", false), "1.2.3", "0123456789abcdef0123"},
		{"module version", "", "v0.4.0", nil, "0.4.0", ""},
		{"checkout", "", "(devel)", vcs("0123456789abcdef0123", false), "0.0.0-dev+0123456789ab", "0123456789abcdef0123"},
		{"dirty checkout", "", "(devel)", vcs("0123456789abcdef0123", true), "0.0.0-dev+0123456789ab.dirty", "0123456789abcdef0123"},
		{"nothing known", "", "(devel)", nil, "0.0.0-dev", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			info := &debug.BuildInfo{Main: debug.Module{Version: tc.mainVer}, Settings: tc.settings}
			got, rev := fromBuildInfo(tc.stamp, "", info)
			if got != tc.want || rev != tc.wantRev {
				t.Errorf("fromBuildInfo = %q, %q; want %q, %q", got, rev, tc.want, tc.wantRev)
			}
		})
	}
}

func TestStringNotEmpty(t *testing.T) {
	if String() == "" {
		t.Fatal("String() is empty")
	}
}
