package flagfile

import "flag"

// StdFlags adapts a parsed flag.FlagSet; skip names flags a file may not
// set (such as the flag that names the file).
func StdFlags(fs *flag.FlagSet, skip ...string) Flags {
	skipped := map[string]bool{}
	for _, s := range skip {
		skipped[s] = true
	}
	changed := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { changed[f.Name] = true })
	return Flags{
		Known:   func(n string) bool { return fs.Lookup(n) != nil && !skipped[n] },
		Changed: func(n string) bool { return changed[n] },
		Set:     func(n, v string) error { return fs.Set(n, v) },
		Names: func() []string {
			var ns []string
			fs.VisitAll(func(f *flag.Flag) {
				if !skipped[f.Name] {
					ns = append(ns, f.Name)
				}
			})
			return ns
		},
	}
}

// StdSettings lists every flag of fs but skip, with its current value.
func StdSettings(fs *flag.FlagSet, secret map[string]bool, skip ...string) []Setting {
	skipped := map[string]bool{}
	for _, s := range skip {
		skipped[s] = true
	}
	var out []Setting
	fs.VisitAll(func(f *flag.Flag) {
		if !skipped[f.Name] {
			out = append(out, Setting{Key: f.Name, Value: f.Value.String(), Usage: f.Usage, Secret: secret[f.Name]})
		}
	})
	return out
}
