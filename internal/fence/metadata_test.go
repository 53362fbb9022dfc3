package fence

import (
	"context"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const sampleMetadata = `Warning: something the agent printed first
<?xml version="1.0" ?>
<resource-agent name="fence_sample" shortdesc="Sample agent">
<longdesc>A sample.</longdesc>
<parameters>
	<parameter name="action" unique="0" required="1">
		<getopt mixed="-o, --action=[action]" />
		<content type="string" default="reboot" />
		<shortdesc lang="en">Fencing action</shortdesc>
	</parameter>
	<parameter name="ip" unique="0" required="1" obsoletes="ipaddr">
		<content type="string" />
		<shortdesc lang="de">Adresse</shortdesc>
		<shortdesc lang="en">IP address or hostname of fencing device</shortdesc>
	</parameter>
	<parameter name="ipaddr" unique="0" required="1" deprecated="1">
		<content type="string" />
	</parameter>
	<parameter name="auth" required="0">
		<content type="select"><option value="md5" /><option value="none" /></content>
	</parameter>
	<parameter name="redfish-uri" required="0"><content type="string" default="/redfish/v1" /></parameter>
	<parameter name="lanplus"><content type="boolean" default="0" /></parameter>
	<parameter name="bare" />
</parameters>
<actions>
	<action name="on" automatic="0"/>
	<action name="off" />
	<action name="status" />
	<action name="off" />
</actions>
</resource-agent>
`

func TestParseMetadata(t *testing.T) {
	md, err := ParseMetadata([]byte(sampleMetadata))
	if err != nil {
		t.Fatal(err)
	}
	if md.Agent != "fence_sample" || md.ShortDesc != "Sample agent" {
		t.Errorf("agent = %q %q", md.Agent, md.ShortDesc)
	}
	if got := strings.Join(md.Actions, ","); got != "on,off,status" {
		t.Errorf("actions = %s", got)
	}
	var names []string
	for _, p := range md.Parameters {
		names = append(names, p.Name)
	}
	if got := strings.Join(names, ","); got != "action,ip,ipaddr,auth,redfish-uri,lanplus,bare" {
		t.Errorf("parameters = %s", got)
	}
	ip, _ := md.Param("ip")
	want := Parameter{Name: "ip", Required: true, Obsoletes: "ipaddr", Type: "string", ShortDesc: "IP address or hostname of fencing device"}
	if !equalParam(ip, want) {
		t.Errorf("ip = %+v, want %+v", ip, want)
	}
	if p, _ := md.Param("ipaddr"); !p.Deprecated || !p.Required {
		t.Errorf("ipaddr = %+v", p)
	}
	if p, _ := md.Param("auth"); p.Type != "select" || !slices.Equal(p.Options, []string{"md5", "none"}) {
		t.Errorf("auth = %+v", p)
	}
	if p, _ := md.Param("bare"); p.Type != "string" || p.Required {
		t.Errorf("bare = %+v", p)
	}
	if p, _ := md.Param("redfish-uri"); p.Default != "/redfish/v1" {
		t.Errorf("redfish-uri = %+v", p)
	}
	if got := md.aliases("ipaddr"); !slices.Equal(got, []string{"ipaddr", "ip"}) {
		t.Errorf("aliases(ipaddr) = %v", got)
	}
}

func equalParam(a, b Parameter) bool {
	return a.Name == b.Name && a.Required == b.Required && a.Deprecated == b.Deprecated && a.Obsoletes == b.Obsoletes &&
		a.Type == b.Type && a.Default == b.Default && slices.Equal(a.Options, b.Options) && a.ShortDesc == b.ShortDesc
}

func TestParseMetadataErrors(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"empty", "", "no <resource-agent>"},
		{"python traceback", "Traceback (most recent call last):\n  File x\n", "no <resource-agent>"},
		{"wrong root", `<?xml version="1.0"?><agent name="x"/>`, "resource-agent"},
		{"truncated", `<resource-agent name="x"><parameters><parameter name="a">`, "parse fence agent metadata"},
		{"duplicate parameter", `<resource-agent name="x"><parameters><parameter name="a"/><parameter name="a"/></parameters></resource-agent>`, `"a" listed twice`},
		{"bad parameter name", `<resource-agent name="x"><parameters><parameter name="a b"/></parameters></resource-agent>`, `bad name "a b"`},
		{"nameless parameter", `<resource-agent name="x"><parameters><parameter/></parameters></resource-agent>`, "bad name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseMetadata([]byte(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestMetadataCheck(t *testing.T) {
	md, err := ParseMetadata([]byte(sampleMetadata))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		params  map[string]string
		wantErr []string
		warn    string
	}{
		{name: "minimal", params: map[string]string{"ip": "h"}},
		{name: "alias", params: map[string]string{"ipaddr": "h"}, warn: `use "ip"`},
		{name: "missing", params: map[string]string{}, wantErr: []string{`needs parameter "ip"`}},
		{name: "two errors", params: map[string]string{"ip": "h", "x": "1", "lanplus": "2"}, wantErr: []string{`no parameter "x"`, `"lanplus" must be a boolean`}},
		{name: "action reserved", params: map[string]string{"ip": "h", "action": "on"}, wantErr: []string{`"action" is set by Haven`}},
		{name: "select", params: map[string]string{"ip": "h", "auth": "md5"}},
		{name: "boolean words", params: map[string]string{"ip": "h", "lanplus": "true"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			warns, err := md.Check(tt.params)
			if len(tt.wantErr) == 0 && err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("err = %v, want %q", err, w)
				}
			}
			if tt.warn != "" && !strings.Contains(strings.Join(warns, "\n"), tt.warn) {
				t.Errorf("warnings = %q, want %q", warns, tt.warn)
			}
		})
	}
}

func FuzzParseMetadata(f *testing.F) {
	f.Add([]byte(sampleMetadata))
	f.Add([]byte(`<resource-agent name="x"><parameters><parameter name="a" required="1" obsoletes="a"/></parameters></resource-agent>`))
	f.Add([]byte(`<?xml version="1.0"?><resource-agent><actions><action/></actions></resource-agent>`))
	// Seeds from the real agents, when installed.
	for _, agent := range []string{"fence_dummy", "fence_ipmilan", "fence_sbd"} {
		if _, err := exec.LookPath(agent); err != nil {
			continue
		}
		out, err := (&Runner{}).Run(context.Background(), agent, "metadata", nil)
		if err == nil {
			f.Add(out.Stdout)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		md, err := ParseMetadata(data)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, p := range md.Parameters {
			if !validParamName(p.Name) || seen[p.Name] || p.Type == "" {
				t.Fatalf("parsed parameter %+v is invalid or repeated", p)
			}
			seen[p.Name] = true
		}
		// Checking any parameters against what was parsed must not panic,
		// and every required non-deprecated parameter must be asked for.
		_, err = md.Check(map[string]string{})
		for _, p := range md.Parameters {
			if p.Required && !p.Deprecated && p.Name != "action" && p.Name != "nodename" && p.Obsoletes != p.Name {
				if err == nil || !strings.Contains(err.Error(), "needs parameter") {
					t.Fatalf("required %q not reported: %v", p.Name, err)
				}
			}
		}
	})
}
