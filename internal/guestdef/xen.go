package guestdef

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// xenValue is one value of a Xen config: a string, a number or a list of
// strings (Xen lists hold strings only in the keys Haven reads).
type xenValue struct {
	line int
	str  string
	num  int64
	isN  bool
	list []string
	isL  bool
}

// parseXenConfig parses the xl/xm config syntax: `key = value` settings,
// one per line or separated by ';', where a value is a quoted string, an
// integer or a [list] of them (lists may span lines); '#' starts a comment.
func parseXenConfig(src string) (map[string]xenValue, error) {
	p := &xenParser{src: src, line: 1}
	out := map[string]xenValue{}
	for {
		p.skipSpace(true)
		if p.eof() {
			return out, nil
		}
		if c := p.peek(); c == ';' {
			p.pos++
			continue
		}
		key, err := p.ident()
		if err != nil {
			return nil, err
		}
		p.skipSpace(false)
		if p.eof() || p.peek() != '=' {
			return nil, p.errf("expected '=' after %q", key)
		}
		p.pos++
		p.skipSpace(false)
		v, err := p.value(true)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		out[key] = v
		p.skipSpace(false)
		if !p.eof() {
			switch p.peek() {
			case '\n', ';':
				p.pos++
				if p.src[p.pos-1] == '\n' {
					p.line++
				}
			default:
				return nil, p.errf("unexpected %q after the value of %s", p.peek(), key)
			}
		}
	}
}

type xenParser struct {
	src  string
	pos  int
	line int
}

func (p *xenParser) eof() bool  { return p.pos >= len(p.src) }
func (p *xenParser) peek() byte { return p.src[p.pos] }

func (p *xenParser) errf(format string, a ...any) error {
	return fmt.Errorf("line %d: %s", p.line, fmt.Sprintf(format, a...))
}

// skipSpace skips blanks and comments, and newlines too when nl.
func (p *xenParser) skipSpace(nl bool) {
	for !p.eof() {
		switch c := p.peek(); {
		case c == ' ' || c == '\t' || c == '\r':
			p.pos++
		case c == '\\' && p.pos+1 < len(p.src) && p.src[p.pos+1] == '\n':
			p.pos += 2
			p.line++
		case c == '\n' && nl:
			p.pos++
			p.line++
		case c == '#':
			for !p.eof() && p.peek() != '\n' {
				p.pos++
			}
		default:
			return
		}
	}
}

func (p *xenParser) ident() (string, error) {
	start := p.pos
	for !p.eof() {
		c := p.peek()
		if c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || p.pos > start && (c >= '0' && c <= '9' || c == '.') {
			p.pos++
			continue
		}
		break
	}
	if p.pos == start {
		if p.eof() {
			return "", p.errf("expected a setting name")
		}
		return "", p.errf("expected a setting name, found %q", p.peek())
	}
	return p.src[start:p.pos], nil
}

func (p *xenParser) value(allowList bool) (xenValue, error) {
	v := xenValue{line: p.line}
	if p.eof() {
		return v, p.errf("missing value")
	}
	switch c := p.peek(); {
	case c == '"' || c == '\'':
		s, err := p.quoted()
		v.str = s
		return v, err
	case c == '[' && allowList:
		p.pos++
		v.isL = true
		v.list = []string{}
		for {
			p.skipSpace(true)
			if p.eof() {
				return v, p.errf("unterminated list")
			}
			if p.peek() == ']' {
				p.pos++
				return v, nil
			}
			e, err := p.value(false)
			if err != nil {
				return v, err
			}
			if e.isN {
				e.str = strconv.FormatInt(e.num, 10)
			}
			v.list = append(v.list, e.str)
			p.skipSpace(true)
			if p.eof() {
				return v, p.errf("unterminated list")
			}
			switch p.peek() {
			case ',':
				p.pos++
			case ']':
			default:
				return v, p.errf("expected ',' or ']' in list, found %q", p.peek())
			}
		}
	case c == '-' || c >= '0' && c <= '9':
		start := p.pos
		p.pos++
		for !p.eof() && (p.peek() >= '0' && p.peek() <= '9' || p.peek() == 'x' || p.peek() >= 'a' && p.peek() <= 'f' || p.peek() >= 'A' && p.peek() <= 'F') {
			p.pos++
		}
		n, err := strconv.ParseInt(p.src[start:p.pos], 0, 64)
		if err != nil {
			return v, p.errf("bad number %q", p.src[start:p.pos])
		}
		v.num, v.isN = n, true
		return v, nil
	default:
		return v, p.errf("expected a quoted string, a number or a list, found %q", c)
	}
}

func (p *xenParser) quoted() (string, error) {
	q := p.peek()
	p.pos++
	var b strings.Builder
	for {
		if p.eof() {
			return "", p.errf("unterminated string")
		}
		c := p.peek()
		p.pos++
		switch {
		case c == q:
			return b.String(), nil
		case c == '\n':
			return "", p.errf("unterminated string")
		case c == '\\' && !p.eof():
			e := p.peek()
			p.pos++
			switch e {
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			default:
				b.WriteByte(e)
			}
		default:
			b.WriteByte(c)
		}
	}
}

// FromXenConfig imports a Xen xl/xm domain config file: name, memory (MiB),
// vcpus, disk = ['file:/path,xvda,w', 'phy:/dev/vg/lv,xvdb,r', or xl's
// 'format=qcow2,vdev=xvdc,access=rw,target=/path'], vif = ['mac=..,bridge=..,
// model=..'], and kernel, ramdisk, root, extra (or cmdline). Settings Haven
// has no use for (builder, on_crash, vfb...) are ignored; a bad value is
// refused with the setting named. The result is validated.
func FromXenConfig(data []byte) (Definition, error) {
	cfg, err := parseXenConfig(string(data))
	if err != nil {
		return Definition{}, fmt.Errorf("import Xen config: %w", err)
	}
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, &FieldError{Field: field, Msg: fmt.Sprintf(format, a...)})
	}
	str := func(key string) string {
		v, ok := cfg[key]
		if !ok {
			return ""
		}
		if v.isL || v.isN {
			bad(key, "line %d: want a quoted string", v.line)
			return ""
		}
		return v.str
	}
	num := func(key string, def int64) int64 {
		v, ok := cfg[key]
		if !ok {
			return def
		}
		if v.isN {
			return v.num
		}
		if !v.isL {
			if n, err := strconv.ParseInt(strings.TrimSpace(v.str), 10, 64); err == nil {
				return n
			}
		}
		bad(key, "line %d: want a number", v.line)
		return def
	}
	list := func(key string) []string {
		v, ok := cfg[key]
		if !ok {
			return nil
		}
		if !v.isL {
			if v.isN {
				bad(key, "line %d: want a list like ['...']", v.line)
				return nil
			}
			return []string{v.str}
		}
		return v.list
	}

	def := Definition{Name: str("name")}
	if _, ok := cfg["name"]; !ok {
		bad("name", "missing: give name = \"...\"")
	}
	def.VCPUs = int(num("vcpus", 1))
	mem := num("memory", 0)
	if _, ok := cfg["memory"]; !ok {
		bad("memory", "missing: give memory = SIZE_IN_MIB")
	} else if mem <= 0 || mem > 1<<40 {
		bad("memory", "%d MiB is out of range", mem)
	}
	def.Memory = mem << 20
	for i, spec := range list("disk") {
		disk, err := xenDisk(spec)
		if err != nil {
			bad(fmt.Sprintf("disk[%d]", i), "%q: %v", spec, err)
			continue
		}
		if disk.Path == "" {
			continue // an empty CD-ROM drive
		}
		def.Disks = append(def.Disks, disk)
	}
	for i, spec := range list("vif") {
		nic, err := xenVIF(spec)
		if err != nil {
			bad(fmt.Sprintf("vif[%d]", i), "%q: %v", spec, err)
			continue
		}
		def.NICs = append(def.NICs, nic)
	}
	def.Boot.Kernel = str("kernel")
	def.Boot.Initrd = str("ramdisk")
	if c := str("cmdline"); c != "" {
		def.Boot.Cmdline = c
	} else {
		var parts []string
		if r := str("root"); r != "" {
			parts = append(parts, "root="+r)
		}
		if e := str("extra"); e != "" {
			parts = append(parts, e)
		}
		def.Boot.Cmdline = strings.Join(parts, " ")
	}
	if len(errs) > 0 {
		return Definition{}, fmt.Errorf("import Xen config %q: %w", def.Name, errors.Join(errs...))
	}
	if err := def.Validate(); err != nil {
		return Definition{}, fmt.Errorf("import Xen config: %w", err)
	}
	return def, nil
}

// xenDisk parses one disk spec: positional "[prefix:]target,vdev,access[,devtype]"
// or xl's keyed "key=value,...,target=..." form.
func xenDisk(spec string) (Disk, error) {
	d := Disk{Format: "raw", Bus: "virtio"}
	var target, vdev, access, devtype string
	if strings.Contains(strings.SplitN(spec, ",", 2)[0], "=") || strings.Contains(spec, "target=") {
		// Keyed form; target= swallows the rest of the spec.
		rest := spec
		for rest != "" {
			var item string
			if strings.HasPrefix(strings.TrimSpace(rest), "target=") {
				item, rest = strings.TrimSpace(rest), ""
			} else {
				item, rest, _ = strings.Cut(rest, ",")
			}
			item = strings.TrimSpace(item)
			if item == "" {
				continue
			}
			k, v, ok := strings.Cut(item, "=")
			if !ok {
				switch item {
				case "cdrom":
					devtype = "cdrom"
				default:
					return d, fmt.Errorf("%q is not key=value", item)
				}
				continue
			}
			switch k {
			case "target":
				target = v
			case "vdev":
				vdev = v
			case "access", "mode":
				access = v
			case "format":
				d.Format = v
			case "devtype":
				devtype = v
			case "backendtype", "script", "backend":
			default:
				return d, fmt.Errorf("unknown disk key %q", k)
			}
		}
	} else {
		f := strings.Split(spec, ",")
		if len(f) < 3 || len(f) > 4 {
			return d, errors.New("want 'file:/path,xvda,w'")
		}
		target, vdev, access = strings.TrimSpace(f[0]), strings.TrimSpace(f[1]), strings.TrimSpace(f[2])
		if len(f) == 4 {
			devtype = strings.TrimSpace(f[3])
		}
		if i := strings.Index(vdev, ":"); i >= 0 { // "hdc:cdrom"
			if vdev[i+1:] == "cdrom" {
				devtype = "cdrom"
			}
			vdev = vdev[:i]
		}
		// Prefixes: file:, phy:, tap:aio:, tap:qcow2:, tap2:tapdisk:aio:, raw:, qcow2:, aio:.
		for {
			pre, rest, ok := strings.Cut(target, ":")
			if !ok || strings.HasPrefix(target, "/") {
				break
			}
			switch pre {
			case "file", "phy", "tap", "tap2", "tapdisk", "aio", "raw":
			case "qcow2":
				d.Format = "qcow2"
			case "qcow", "vhd", "vmdk":
				return d, fmt.Errorf("format %q is not supported: convert the image to raw or qcow2 (qemu-img convert)", pre)
			default:
				return d, fmt.Errorf("unknown disk prefix %q", pre)
			}
			target = rest
		}
	}
	switch access {
	case "w", "rw", "":
	case "r", "ro":
		d.ReadOnly = true
	case "w!", "!":
		return d, errors.New("shared-writable disks (w!) are not supported")
	default:
		return d, fmt.Errorf("access %q is not r or w", access)
	}
	if devtype == "cdrom" {
		d.ReadOnly = true
	}
	if vdev == "" {
		return d, errors.New("no virtual device name (xvda, hda...)")
	}
	if strings.HasPrefix(vdev, "hd") {
		d.Bus = "ide"
	}
	if target != "" && !strings.HasPrefix(target, "/") {
		return d, fmt.Errorf("target %q is not an absolute path", target)
	}
	switch d.Format {
	case "raw", "qcow2":
	default:
		return d, fmt.Errorf("format %q is not supported: use raw or qcow2", d.Format)
	}
	d.Path = target
	return d, nil
}

// xenVIF parses one vif spec: "key=value,..." with mac, bridge, model.
func xenVIF(spec string) (NIC, error) {
	n := NIC{Model: "virtio"}
	for _, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		k, v, ok := strings.Cut(item, "=")
		if !ok {
			return n, fmt.Errorf("%q is not key=value", item)
		}
		switch strings.TrimSpace(k) {
		case "mac":
			n.MAC = strings.ToLower(strings.TrimSpace(v))
		case "bridge":
			n.Bridge = strings.TrimSpace(v)
		case "model":
			switch m := strings.TrimSpace(v); m {
			case "e1000", "rtl8139", "virtio":
				n.Model = m
			case "virtio-net", "virtio-net-pci":
				n.Model = "virtio"
			default:
				return n, fmt.Errorf("model %q is not supported: use virtio, e1000 or rtl8139", m)
			}
		case "type", "script", "vifname", "ip", "rate", "backend", "gatewaydev", "mtu":
		default:
			return n, fmt.Errorf("unknown vif key %q", k)
		}
	}
	if n.Bridge == "" {
		return n, errors.New("no bridge=: say which host bridge the interface joins")
	}
	return n, nil
}
