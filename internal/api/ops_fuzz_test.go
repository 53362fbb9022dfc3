package api

import (
	"errors"
	"testing"

	"github.com/haven-ha/haven/internal/cluster"
	"github.com/haven-ha/haven/internal/fence"
	"github.com/haven-ha/haven/internal/guestdef"
	"github.com/haven-ha/haven/internal/model"
)

// decodeOK checks the error contract of request decoding: nil, or an
// *Error with status 400.
func decodeOK(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	var e *Error
	if !errors.As(err, &e) || e.Status != 400 || e.Message == "" {
		t.Fatalf("decode error %#v is not a 400 API error", err)
	}
}

// FuzzGuestCreate decodes arbitrary bodies as POST /api/v1/guests does: it
// never panics, rejects with a 400 naming what is wrong, and what it
// accepts is a valid guest whose definition agrees with its spec.
func FuzzGuestCreate(f *testing.F) {
	for _, s := range []string{
		`{"name":"web1"}`,
		`{"name":"web1","memory":"512MiB","vcpus":2,"restart_window":"5m","disks":[{"path":"/x.qcow2","format":"qcow2"}],"nics":[{"bridge":"br0","mac":"52:54:00:00:00:01"}]}`,
		`{"name":"a","memory":1073741824,"restart_window":30,"state":"disabled","recovery":"relocate"}`,
		`{"format":"test","config":"name=x"}`,
		`{"name":"b","memory":"9999999999999TiB"}`,
		`{"name":"c","boot":{"kernel":"/k","initrd":"/i","cmdline":"console=ttyS0"}}`,
		`{"name":"d","disks":[{"pool":"p","volume":"v"}]}`,
		`[]`, `null`, `{"name":1}`, `{"memory":-1}`, `{"restart_window":-5}`,
	} {
		f.Add([]byte(s))
	}
	o := &Ops{cfg: OpsConfig{Importers: map[string]Importer{"test": func(b []byte) (guestdef.Definition, error) {
		if len(b) == 0 || b[0] != 'n' {
			return guestdef.Definition{}, errors.New("not a test config")
		}
		return guestdef.Definition{Name: "imp", VCPUs: 1, Memory: 128 * model.MiB}, nil
	}}}}
	f.Fuzz(func(t *testing.T, data []byte) {
		g, _, err := o.buildGuest(data, cluster.Guest{Spec: model.DefaultGuestSpec("")})
		decodeOK(t, err)
		if err != nil {
			return
		}
		if e := cluster.CheckSpec(g.Spec); e != nil {
			t.Fatalf("accepted an invalid spec %+v: %v", g.Spec, e)
		}
		if e := checkDef(g.Def); e != nil {
			t.Fatalf("accepted an invalid definition %+v: %v", g.Def, e)
		}
		if g.Def.Memory != g.Spec.Memory || g.Def.VCPUs != g.Spec.CPUs || g.Def.Name != g.Spec.Name {
			t.Fatalf("definition %+v disagrees with spec %+v", g.Def, g.Spec)
		}
	})
}

// FuzzGuestEdit decodes arbitrary bodies over an existing guest, as PUT
// does.
func FuzzGuestEdit(f *testing.F) {
	for _, s := range []string{`{}`, `{"vcpus":4,"rev":3}`, `{"disks":null}`, `{"nics":[{"user":true}]}`, `{"memory":"1G"}`} {
		f.Add([]byte(s))
	}
	base := cluster.Guest{Spec: model.DefaultGuestSpec("g1")}
	base.Def = guestdef.Definition{Name: "g1", VCPUs: 1, Memory: base.Spec.Memory, Disks: []guestdef.Disk{{Path: "/g1.img"}}}
	o := &Ops{}
	f.Fuzz(func(t *testing.T, data []byte) {
		g, _, err := o.buildGuest(data, base)
		decodeOK(t, err)
		if err == nil && cluster.CheckSpec(g.Spec) != nil {
			t.Fatalf("accepted an invalid spec %+v", g.Spec)
		}
	})
}

// FuzzDecodeBodies decodes arbitrary bodies as the domain, pool, policy,
// fence, command and maintenance endpoints do.
func FuzzDecodeBodies(f *testing.F) {
	for _, s := range []string{
		`{"name":"d","members":[{"node":"n1","priority":1}],"restricted":true}`,
		`{"name":"p","kind":"dir","path":"/srv","shared":true}`,
		`{"fencing":"agent","shutdown_policy":"freeze"}`,
		`{"devices":[{"name":"x","agent":"fence_dummy","params":{"password":"********"}}],"levels":{"n1":[{"devices":["x"]}]}}`,
		`{"node":"n2"}`, `{"on":true}`, ``, `{`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var d model.Domain
		decodeOK(t, decodeStrict(data, &d, false))
		var p Pool
		if err := decodeStrict(data, &p, false); err == nil {
			decodeOK(t, checkPool(p))
		} else {
			decodeOK(t, err)
		}
		var pol cluster.Policy
		decodeOK(t, decodeStrict(data, &pol, false))
		var fc fence.Config
		decodeOK(t, decodeStrict(data, &fc, false))
		var cr CommandRequest
		decodeOK(t, decodeStrict(data, &cr, true))
		var mr MaintenanceRequest
		decodeOK(t, decodeStrict(data, &mr, false))
	})
}

// FuzzParseSize checks that sizes parse without panics and that
// FormatSize's output reads back as the same size.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"512MiB", "2G", "1073741824", "0", "1k", "8TiB", "-1", "9223372036854775807", "1.5G", "10 GiB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("ParseSize(%q) = %d < 0", s, n)
		}
		back, err := ParseSize(FormatSize(n))
		if err != nil || back != n {
			t.Fatalf("ParseSize(FormatSize(%d) = %q) = %d, %v", n, FormatSize(n), back, err)
		}
	})
}

func TestParseSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"512MiB", 512 * model.MiB, true}, {"512M", 512 * model.MiB, true}, {"2GiB", 2 * model.GiB, true},
		{"1g", model.GiB, true}, {"4096", 4096, true}, {"1KB", model.KiB, true}, {"3 TiB", 3 * model.TiB, true},
		{"", 0, false}, {"lots", 0, false}, {"1.5G", 0, false}, {"-1G", 0, false}, {"1PB", 0, false},
		{"9999999999999TiB", 0, false},
	} {
		got, err := ParseSize(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d ok=%v", c.in, got, err, c.want, c.ok)
		}
	}
}
