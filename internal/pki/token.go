package pki

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"strings"
)

// Token formats. An API token is "hvt.ID.SECRET"; a join token is
// "hvj.ID.SECRET.CAPIN" where CAPIN is the first 32 hex digits of the
// cluster CA's fingerprint, so the joining host can authenticate the cluster
// before sending anything. Only ID and the SHA-256 of SECRET are stored.
const (
	apiPrefix  = "hvt"
	joinPrefix = "hvj"
	pinLen     = 32
)

// ErrBadToken reports a string that is not a Haven token.
var ErrBadToken = errors.New("malformed token")

// Token is a parsed bearer token.
type Token struct {
	ID     string
	Secret string
	Join   bool
	CAPin  string // join tokens only
}

// String renders the token as given to users.
func (t Token) String() string {
	if t.Join {
		return joinPrefix + "." + t.ID + "." + t.Secret + "." + t.CAPin
	}
	return apiPrefix + "." + t.ID + "." + t.Secret
}

// Hash is what the store keeps of the secret.
func (t Token) Hash() string { return HashSecret(t.Secret) }

// NewAPIToken makes a fresh random API token.
func NewAPIToken() Token { return Token{ID: randWord(8), Secret: randWord(20)} }

// NewJoinToken makes a fresh random join token pinned to a CA fingerprint.
func NewJoinToken(caFingerprint string) Token {
	return Token{ID: randWord(8), Secret: randWord(20), Join: true, CAPin: caFingerprint[:pinLen]}
}

// ParseToken parses either kind of token.
func ParseToken(s string) (Token, error) {
	parts := strings.Split(strings.TrimSpace(s), ".")
	switch {
	case len(parts) == 3 && parts[0] == apiPrefix:
	case len(parts) == 4 && parts[0] == joinPrefix:
		if len(parts[3]) != pinLen || !isHex(parts[3]) {
			return Token{}, ErrBadToken
		}
	default:
		return Token{}, ErrBadToken
	}
	for _, p := range parts[1:3] {
		if p == "" || len(p) > 64 || !isWord(p) {
			return Token{}, ErrBadToken
		}
	}
	t := Token{ID: parts[1], Secret: parts[2], Join: parts[0] == joinPrefix}
	if t.Join {
		t.CAPin = parts[3]
	}
	return t, nil
}

// HashSecret is the stored form of a token secret. Secrets are 100 random
// bits, so a plain SHA-256 suffices (no password stretching needed).
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// SecretMatches compares a secret with a stored hash in constant time.
func SecretMatches(secret, hash string) bool {
	return subtle.ConstantTimeCompare([]byte(HashSecret(secret)), []byte(hash)) == 1
}

var enc = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

func randWord(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return enc.EncodeToString(b)
}

func isWord(s string) bool {
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}

func isHex(s string) bool {
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
