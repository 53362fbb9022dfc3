// Package flagfile owns Haven's configuration files: a YAML mapping whose
// keys are a command's long flag names (/etc/haven/agent.yaml for `haven
// agent`). A file sets the flags the command line did not: flags override
// the file. Unknown keys, non-scalar values and bad values are errors that
// name the file and line. Print writes the effective settings back in the
// same format, so its output is a valid file.
package flagfile

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// Entry is one key of a file.
type Entry struct {
	Key, Value string
	Line       int
}

// Parse reads a YAML mapping of flag names to scalars (a sequence of
// scalars is joined with commas, for list flags). name labels errors.
func Parse(name string, data []byte) ([]Entry, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil, nil // empty file
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return nil, nil // only comments
	}
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s:%d: want a mapping of settings (key: value), found %s", name, root.Line, kindName(root))
	}
	var out []Entry
	seen := map[string]int{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return nil, fmt.Errorf("%s:%d: a key must be a flag name, found %s", name, k.Line, kindName(k))
		}
		if prev, dup := seen[k.Value]; dup {
			return nil, fmt.Errorf("%s:%d: %q is set twice (first on line %d)", name, k.Line, k.Value, prev)
		}
		seen[k.Value] = k.Line
		var val string
		switch v.Kind {
		case yaml.ScalarNode:
			if v.Tag != "!!null" {
				val = v.Value
			}
		case yaml.SequenceNode:
			var items []string
			for _, it := range v.Content {
				if it.Kind != yaml.ScalarNode {
					return nil, fmt.Errorf("%s:%d: %s: list items must be plain values, found %s", name, it.Line, k.Value, kindName(it))
				}
				items = append(items, it.Value)
			}
			val = strings.Join(items, ",")
		default:
			return nil, fmt.Errorf("%s:%d: %s: want a plain value, found %s", name, v.Line, k.Value, kindName(v))
		}
		out = append(out, Entry{Key: k.Value, Value: val, Line: k.Line})
	}
	return out, nil
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	return "a value"
}

// Flags is what Apply needs of a flag set (flag.FlagSet or pflag.FlagSet,
// wrapped in closures).
type Flags struct {
	// Known reports whether the command has a flag of this name that a
	// file may set.
	Known func(name string) bool
	// Changed reports whether the command line set the flag.
	Changed func(name string) bool
	// Set sets the flag from its text form.
	Set func(name, value string) error
	// Names lists the keys a file may use, for the error on an unknown one.
	Names func() []string
}

// Apply sets every flag of entries that the command line did not.
func Apply(name string, entries []Entry, fl Flags) error {
	for _, e := range entries {
		if !fl.Known(e.Key) {
			msg := fmt.Sprintf("%s:%d: unknown key %q", name, e.Line, e.Key)
			if near := closest(e.Key, fl.Names()); near != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", near)
			}
			return errors.New(msg)
		}
		if fl.Changed(e.Key) {
			continue
		}
		if err := fl.Set(e.Key, e.Value); err != nil {
			return fmt.Errorf("%s:%d: %s: invalid value %q: %w", name, e.Line, e.Key, e.Value, err)
		}
	}
	return nil
}

// Load reads and applies the file at path. A missing file is an error
// unless optional is true.
func Load(path string, optional bool, fl Flags) (found bool, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && optional {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read config file: %w", err)
	}
	entries, err := Parse(path, data)
	if err != nil {
		return true, err
	}
	return true, Apply(path, entries, fl)
}

// Setting is one line of Print's output.
type Setting struct {
	Key, Value, Usage string
	// Secret hides a non-empty value.
	Secret bool
}

// Print renders settings as a file Parse reads back, each with its usage
// as a comment.
func Print(settings []Setting) ([]byte, error) {
	m := &yaml.Node{Kind: yaml.MappingNode}
	for _, s := range settings {
		val := s.Value
		if s.Secret && val != "" {
			val = "(hidden)"
		}
		k := &yaml.Node{Kind: yaml.ScalarNode, Value: s.Key, HeadComment: s.Usage}
		v := &yaml.Node{Kind: yaml.ScalarNode, Value: val}
		if val == "" {
			v.Style = yaml.DoubleQuotedStyle
		}
		m.Content = append(m.Content, k, v)
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{m}}); err != nil {
		return nil, err
	}
	return buf.Bytes(), enc.Close()
}

// closest returns the known name nearest to key by edit distance, if close.
func closest(key string, names []string) string {
	best, bestD := "", 3
	for _, n := range slices.Sorted(slices.Values(names)) {
		if d := distance(key, n); d < bestD {
			best, bestD = n, d
		}
	}
	return best
}

func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := prev[j-1]
			if a[i-1] != b[j-1] {
				c++
			}
			cur[j] = min(c, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
