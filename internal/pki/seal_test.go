package pki

import (
	"strings"
	"testing"
	"time"
)

func TestSealOpen(t *testing.T) {
	k := NewSecretKey()
	v, err := k.Seal("/haven/pki/ca.key", []byte("the CA key"))
	if err != nil {
		t.Fatal(err)
	}
	if !IsSealed([]byte(v)) || SealedWith([]byte(v)) != k.ID || strings.Contains(v, "the CA key") {
		t.Fatalf("sealed value %q", v)
	}
	got, err := k.Open("/haven/pki/ca.key", []byte(v))
	if err != nil || string(got) != "the CA key" {
		t.Fatalf("open: %q %v", got, err)
	}
	// Moved to another key, opened with another secret key, tampered with,
	// or not sealed at all: refused.
	if _, err := k.Open("/haven/fence/config", []byte(v)); err == nil {
		t.Error("a sealed value opened under another label")
	}
	other := NewSecretKey()
	other.ID = k.ID
	if _, err := other.Open("/haven/pki/ca.key", []byte(v)); err == nil {
		t.Error("a sealed value opened with another key")
	}
	bad := []byte(v)
	bad[len(bad)-3] ^= 1
	if _, err := k.Open("/haven/pki/ca.key", bad); err == nil {
		t.Error("a tampered value opened")
	}
	if _, err := NewSecretKey().Open("/haven/pki/ca.key", []byte(v)); err == nil || !strings.Contains(err.Error(), k.ID) {
		t.Errorf("open with a rotated key: %v, want the key ID named", err)
	}
	if _, err := k.Open("x", []byte("-----BEGIN EC PRIVATE KEY-----")); err != ErrNotSealed {
		t.Errorf("plain value: %v", err)
	}
}

// A secret key wrapped for one host's certificate unwraps only with that
// host's private key.
func TestWrapKey(t *testing.T) {
	ca, err := NewCA("c", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.IssueNode("n1", nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	_, otherKey, err := ca.IssueNode("n2", nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	k := NewSecretKey()
	w, err := WrapKey(cert, k)
	if err != nil {
		t.Fatal(err)
	}
	got, err := UnwrapKey(key, w)
	if err != nil || got.ID != k.ID || string(got.Key) != string(k.Key) {
		t.Fatalf("unwrap: %+v %v", got, err)
	}
	if _, err := UnwrapKey(otherKey, w); err == nil {
		t.Error("another host's key unwrapped the secret key")
	}
	if _, err := UnwrapKey(key, w[:len(w)-4]); err == nil {
		t.Error("a truncated wrapped key unwrapped")
	}
	if _, err := WrapKey([]byte("not a cert"), k); err == nil {
		t.Error("wrapped for no certificate")
	}
}

func FuzzUnwrapKey(f *testing.F) {
	ca, _ := NewCA("c", time.Now())
	cert, key, _ := ca.IssueNode("n1", nil, time.Now())
	w, _ := WrapKey(cert, NewSecretKey())
	f.Add(w)
	f.Add("hvw1.")
	f.Fuzz(func(t *testing.T, s string) {
		_, _ = UnwrapKey(key, s)
		_, _ = NewSecretKey().Open("l", []byte(s))
	})
}
