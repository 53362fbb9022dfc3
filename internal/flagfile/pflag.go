package flagfile

import "github.com/spf13/pflag"

// PFlags adapts a parsed pflag.FlagSet (the CLI's); skip names flags a file
// may not set (such as the flag that names the file).
func PFlags(fs *pflag.FlagSet, skip ...string) Flags {
	skipped := map[string]bool{}
	for _, s := range skip {
		skipped[s] = true
	}
	return Flags{
		Known:   func(n string) bool { return fs.Lookup(n) != nil && !skipped[n] },
		Changed: fs.Changed,
		Set:     fs.Set,
		Names: func() []string {
			var ns []string
			fs.VisitAll(func(f *pflag.Flag) {
				if !skipped[f.Name] {
					ns = append(ns, f.Name)
				}
			})
			return ns
		},
	}
}

// PSettings lists every flag of fs but skip, with its current value.
func PSettings(fs *pflag.FlagSet, secret map[string]bool, skip ...string) []Setting {
	skipped := map[string]bool{}
	for _, s := range skip {
		skipped[s] = true
	}
	var out []Setting
	fs.VisitAll(func(f *pflag.Flag) {
		if !skipped[f.Name] {
			v := f.Value.String()
			if f.Value.Type() == "stringSlice" || f.Value.Type() == "stringArray" {
				if sv, ok := f.Value.(pflag.SliceValue); ok {
					v = joinComma(sv.GetSlice())
				}
			}
			out = append(out, Setting{Key: f.Name, Value: v, Usage: f.Usage, Secret: secret[f.Name]})
		}
	})
	return out
}

func joinComma(ss []string) string {
	out := ""
	for i, s := range ss {
		if i > 0 {
			out += ","
		}
		out += s
	}
	return out
}
