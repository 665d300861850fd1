package users

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// KeySize is the length of an encryption key in bytes: AES-256.
const KeySize = 32

// maxKeyID bounds a key id, which is stored in clear with every sealed
// token.
const maxKeyID = 64

// sealVersion is the first byte of a sealed token: its layout.
const sealVersion = 1

// aadPrefix starts the additional data of every seal; the identity
// follows, so a sealed token moved to another identity does not open.
const aadPrefix = "tokenmanager/users/v1\x00"

// Keys seals refresh tokens with AES-256-GCM. It holds one or more keys,
// each with an id stored beside what it sealed; the current one seals,
// all of them open, so keys rotate without a flag day: add a new key as
// current and keep the old ones until every token has been sealed anew
// (each rotation of a refresh token seals it with the current key; a
// provider also reseals a token it refreshed under an older key).
//
// A Keys is safe for concurrent use by multiple goroutines. It never
// prints its keys: fmt shows only the ids.
type Keys struct {
	current string
	aeads   map[string]cipher.AEAD
}

// NewKeys returns keys that seal with the key named current and open
// with any of secrets (id → 32-byte key). Ids are 1 to 64 letters,
// digits, '.', '_' or '-'. The caller may reuse secrets afterwards.
func NewKeys(current string, secrets map[string][]byte) (*Keys, error) {
	var errs []error
	k := &Keys{current: current, aeads: make(map[string]cipher.AEAD, len(secrets))}
	for id, secret := range secrets {
		if err := checkKeyID(id); err != nil {
			errs = append(errs, err)
			continue
		}
		if len(secret) != KeySize {
			errs = append(errs, fmt.Errorf("users: key %q is %d bytes; it must be %d (AES-256)", id, len(secret), KeySize))
			continue
		}
		block, err := aes.NewCipher(secret)
		if err != nil {
			errs = append(errs, fmt.Errorf("users: key %q: %v", id, err))
			continue
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			errs = append(errs, fmt.Errorf("users: key %q: %v", id, err))
			continue
		}
		k.aeads[id] = aead
	}
	if _, ok := secrets[current]; !ok {
		errs = append(errs, fmt.Errorf("users: the current key %q is not among the keys", current))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return k, nil
}

// ParseKeys reads keys from one setting (an environment variable, a
// secret file): comma-separated id:key pairs, each key 32 bytes in
// base64 (standard or URL alphabet, padded or not). The first pair is
// the current key. For example "k2:<base64>,k1:<base64>" seals with k2
// and still opens what k1 sealed. Errors never hold a key.
func ParseKeys(spec string) (*Keys, error) {
	spec = strings.TrimSpace(spec)
	if spec == "" {
		return nil, errors.New("users: no keys given; want id:base64key[,id:base64key...]")
	}
	secrets := make(map[string][]byte)
	current := ""
	for i, pair := range strings.Split(spec, ",") {
		id, b64, ok := strings.Cut(strings.TrimSpace(pair), ":")
		if !ok {
			return nil, fmt.Errorf("users: key %d has no id; want id:base64key", i+1)
		}
		if _, dup := secrets[id]; dup {
			return nil, fmt.Errorf("users: key id %q appears twice", id)
		}
		secret, err := decodeKey(b64)
		if err != nil {
			return nil, fmt.Errorf("users: key %q is not base64", id)
		}
		secrets[id] = secret
		if i == 0 {
			current = id
		}
	}
	return NewKeys(current, secrets)
}

func decodeKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	var err error
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		var b []byte
		if b, err = enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, err
}

func checkKeyID(id string) error {
	if id == "" || len(id) > maxKeyID {
		return fmt.Errorf("users: key id %q must be 1 to %d characters", id, maxKeyID)
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Errorf("users: key id %q may hold only letters, digits, '.', '_' and '-'", id)
		}
	}
	return nil
}

// Current returns the id of the key that seals.
func (k *Keys) Current() string { return k.current }

// IDs returns the ids of all keys, sorted.
func (k *Keys) IDs() []string {
	ids := make([]string, 0, len(k.aeads))
	for id := range k.aeads {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Seal encrypts plaintext for identity with the current key. The result
// names the key; it opens only with the same identity.
func (k *Keys) Seal(identity string, plaintext []byte) ([]byte, error) {
	if k == nil {
		return nil, errors.New("users: Keys is nil")
	}
	aead := k.aeads[k.current]
	out := make([]byte, 0, 2+len(k.current)+aead.NonceSize()+len(plaintext)+aead.Overhead())
	out = append(out, sealVersion, byte(len(k.current)))
	out = append(out, k.current...)
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("users: reading random nonce: %w", err)
	}
	out = append(out, nonce...)
	return aead.Seal(out, nonce, plaintext, aad(identity)), nil
}

// ErrUnknownKey is wrapped by the error of [Keys.Open] when a sealed
// token names a key that is not among the keys: a key was dropped while
// tokens it sealed were still stored.
var ErrUnknownKey = errors.New("users: sealed with a key that is not configured")

// Open decrypts what [Keys.Seal] sealed for identity, and returns the id
// of the key that sealed it. The error never holds the sealed bytes.
func (k *Keys) Open(identity string, sealed []byte) (plaintext []byte, keyID string, err error) {
	if k == nil {
		return nil, "", errors.New("users: Keys is nil")
	}
	if len(sealed) < 2 || sealed[0] != sealVersion || len(sealed) < 2+int(sealed[1]) {
		return nil, "", errors.New("users: sealed token is malformed")
	}
	keyID = string(sealed[2 : 2+int(sealed[1])])
	aead, ok := k.aeads[keyID]
	if !ok {
		return nil, keyID, fmt.Errorf("%w: key id %q", ErrUnknownKey, keyID)
	}
	rest := sealed[2+int(sealed[1]):]
	if len(rest) < aead.NonceSize()+aead.Overhead() {
		return nil, keyID, errors.New("users: sealed token is malformed")
	}
	plaintext, err = aead.Open(nil, rest[:aead.NonceSize()], rest[aead.NonceSize():], aad(identity))
	if err != nil {
		return nil, keyID, fmt.Errorf("users: sealed token does not open with key %q for this identity (tampered, or stored under another identity)", keyID)
	}
	return plaintext, keyID, nil
}

func aad(identity string) []byte { return []byte(aadPrefix + identity) }

// String names the keys by id, never showing them.
func (k *Keys) String() string {
	if k == nil {
		return "users.Keys(nil)"
	}
	return fmt.Sprintf("users.Keys{current:%s ids:%v}", k.current, k.IDs())
}

// GoString is like String.
func (k *Keys) GoString() string { return k.String() }

// Format is like String for every verb, so no verb prints the keys.
func (k *Keys) Format(f fmt.State, _ rune) { fmt.Fprint(f, k.String()) }
