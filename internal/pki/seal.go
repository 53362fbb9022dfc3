package pki

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// Secrets at rest. The cluster CA key and the fence configuration are kept
// in the store sealed (AES-256-GCM) with the cluster secret key; the secret
// key itself is in the store only wrapped for each current host, to the
// public key of its certificate (ECDH P-256, HKDF-SHA256, AES-256-GCM). A
// reader of the store without a current host's private key (a removed
// host, a backup, an external etcd's admin) sees ciphertext only.
//
//	sealed:  "hvs1.KEYID.BASE64(nonce || ciphertext)"
//	wrapped: "hvw1.BASE64(ephemeral public key || nonce || ciphertext)"
//
// The key's label (what it protects, e.g. the store key) is bound as
// additional data, so a sealed value cannot be moved to another key.
const (
	sealPrefix = "hvs1."
	wrapPrefix = "hvw1."
	SecretLen  = 32
)

// ErrNotSealed reports a value that is not sealed (a store written before
// secrets were sealed).
var ErrNotSealed = errors.New("value is not sealed")

// SecretKey is a cluster secret key and its ID.
type SecretKey struct {
	ID  string // 16 hex digits, random; names the key a value is sealed with
	Key []byte // SecretLen bytes
}

// NewSecretKey makes a random secret key.
func NewSecretKey() SecretKey {
	id := make([]byte, 8)
	k := make([]byte, SecretLen)
	_, _ = rand.Read(id)
	_, _ = rand.Read(k)
	return SecretKey{ID: hex.EncodeToString(id), Key: k}
}

// Seal encrypts plain under k for label.
func (k SecretKey) Seal(label string, plain []byte) (string, error) {
	aead, err := newGCM(k.Key)
	if err != nil {
		return "", err
	}
	nonce := make([]byte, aead.NonceSize())
	_, _ = rand.Read(nonce)
	ct := aead.Seal(nonce, nonce, plain, []byte(label))
	return sealPrefix + k.ID + "." + base64.RawStdEncoding.EncodeToString(ct), nil
}

// IsSealed reports whether v is a sealed value.
func IsSealed(v []byte) bool { return strings.HasPrefix(string(v), sealPrefix) }

// SealedWith is the ID of the key v is sealed with ("" if v is not sealed).
func SealedWith(v []byte) string {
	if !IsSealed(v) {
		return ""
	}
	id, _, _ := strings.Cut(strings.TrimPrefix(string(v), sealPrefix), ".")
	return id
}

// Open decrypts a value sealed for label; ErrNotSealed if v is plain.
func (k SecretKey) Open(label string, v []byte) ([]byte, error) {
	if !IsSealed(v) {
		return nil, ErrNotSealed
	}
	id, body, ok := strings.Cut(strings.TrimPrefix(string(v), sealPrefix), ".")
	if !ok {
		return nil, fmt.Errorf("open %s: malformed sealed value", label)
	}
	if id != k.ID {
		return nil, fmt.Errorf("open %s: sealed with key %s, this host holds key %s", label, id, k.ID)
	}
	ct, err := base64.RawStdEncoding.DecodeString(body)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", label, err)
	}
	aead, err := newGCM(k.Key)
	if err != nil {
		return nil, err
	}
	if len(ct) < aead.NonceSize() {
		return nil, fmt.Errorf("open %s: sealed value too short", label)
	}
	plain, err := aead.Open(nil, ct[:aead.NonceSize()], ct[aead.NonceSize():], []byte(label))
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", label, err)
	}
	return plain, nil
}

// WrapKey encrypts k to the public key of a host certificate (PEM), so
// that only the holder of that host's private key can unwrap it.
func WrapKey(certPEM []byte, k SecretKey) (string, error) {
	cert, err := ParseCert(certPEM)
	if err != nil {
		return "", fmt.Errorf("wrap secret key: %w", err)
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return "", fmt.Errorf("wrap secret key for %q: not an ECDSA certificate", cert.Subject.CommonName)
	}
	rpub, err := pub.ECDH()
	if err != nil {
		return "", fmt.Errorf("wrap secret key for %q: %w", cert.Subject.CommonName, err)
	}
	eph, err := rpub.Curve().GenerateKey(rand.Reader)
	if err != nil {
		return "", err
	}
	aead, err := wrapAEAD(eph, rpub, eph.PublicKey())
	if err != nil {
		return "", err
	}
	nonce := make([]byte, aead.NonceSize())
	_, _ = rand.Read(nonce)
	plain := append([]byte(k.ID+"."), k.Key...)
	out := append(eph.PublicKey().Bytes(), nonce...)
	out = aead.Seal(out, nonce, plain, nil)
	return wrapPrefix + base64.RawStdEncoding.EncodeToString(out), nil
}

// UnwrapKey decrypts a key wrapped for the host whose private key (PEM)
// is given.
func UnwrapKey(keyPEM []byte, wrapped string) (SecretKey, error) {
	b, _ := pem.Decode(keyPEM)
	if b == nil {
		return SecretKey{}, errors.New("unwrap secret key: no PEM private key")
	}
	priv, err := x509.ParseECPrivateKey(b.Bytes)
	if err != nil {
		return SecretKey{}, fmt.Errorf("unwrap secret key: %w", err)
	}
	epriv, err := priv.ECDH()
	if err != nil {
		return SecretKey{}, fmt.Errorf("unwrap secret key: %w", err)
	}
	if !strings.HasPrefix(wrapped, wrapPrefix) {
		return SecretKey{}, errors.New("unwrap secret key: not a wrapped key")
	}
	raw, err := base64.RawStdEncoding.DecodeString(strings.TrimPrefix(wrapped, wrapPrefix))
	if err != nil {
		return SecretKey{}, fmt.Errorf("unwrap secret key: %w", err)
	}
	n := len(epriv.PublicKey().Bytes())
	if len(raw) < n+12 {
		return SecretKey{}, errors.New("unwrap secret key: too short")
	}
	eph, err := epriv.Curve().NewPublicKey(raw[:n])
	if err != nil {
		return SecretKey{}, fmt.Errorf("unwrap secret key: %w", err)
	}
	aead, err := wrapAEAD(epriv, eph, eph)
	if err != nil {
		return SecretKey{}, err
	}
	plain, err := aead.Open(nil, raw[n:n+aead.NonceSize()], raw[n+aead.NonceSize():], nil)
	if err != nil {
		return SecretKey{}, fmt.Errorf("unwrap secret key: not wrapped for this host's key: %w", err)
	}
	id, key, ok := strings.Cut(string(plain), ".")
	if !ok || len(key) != SecretLen {
		return SecretKey{}, errors.New("unwrap secret key: malformed key")
	}
	return SecretKey{ID: id, Key: []byte(key)}, nil
}

// wrapAEAD derives the key-wrapping cipher from an ECDH exchange between
// priv and peer; ephPub (the ephemeral key) salts the derivation.
func wrapAEAD(priv *ecdh.PrivateKey, peer, ephPub *ecdh.PublicKey) (cipher.AEAD, error) {
	shared, err := priv.ECDH(peer)
	if err != nil {
		return nil, fmt.Errorf("wrap secret key: %w", err)
	}
	kek, err := hkdf.Key(sha256.New, shared, ephPub.Bytes(), "haven cluster secret key", 32)
	if err != nil {
		return nil, err
	}
	return newGCM(kek)
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("secret key: %w", err)
	}
	return cipher.NewGCM(block)
}
