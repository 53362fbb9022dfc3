package model

import (
	"strings"
	"testing"
)

func TestDependencyCycle(t *testing.T) {
	if c := DependencyCycle(map[string][]string{"a": {"b"}, "b": {"c"}, "c": nil}); c != nil {
		t.Fatalf("cycle in a chain: %v", c)
	}
	c := DependencyCycle(map[string][]string{"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})
	if FormatCycle(c) != "a -> b -> c -> a" {
		t.Fatalf("cycle %v", c)
	}
}

func TestCheckRules(t *testing.T) {
	ok := []Rule{{Name: "t", Kind: AffinityTogether, Guests: []string{"a", "b"}}, {Name: "s", Kind: AffinityApart, Guests: []string{"a", "b"}, Soft: true}}
	if err := CheckRules(ok, nil, nil); err != nil {
		t.Fatal(err)
	}
	bad := append(ok, Rule{Name: "x", Kind: AffinityApart, Guests: []string{"b", "a"}})
	if err := CheckRules(bad, nil, nil); err == nil || !strings.Contains(err.Error(), "keep them on one host") {
		t.Fatalf("contradiction: %v", err)
	}
	if err := CheckRules(ok, func(g string) bool { return g == "a" }, nil); err == nil || !strings.Contains(err.Error(), `no such guest "b"`) {
		t.Fatalf("unknown guest: %v", err)
	}
	groups := TogetherGroups([]Rule{{Name: "1", Kind: AffinityTogether, Guests: []string{"c", "b"}}, {Name: "2", Kind: AffinityTogether, Guests: []string{"b", "a"}}, {Name: "3", Kind: AffinityTogether, Guests: []string{"x", "y"}, Soft: true}})
	if groups["a"] != "a" || groups["b"] != "a" || groups["c"] != "a" || groups["x"] != "" {
		t.Fatalf("groups %v", groups)
	}
}
