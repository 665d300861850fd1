package users_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/go-tokenmanager/tokenmanager/users"
)

func key(b byte) []byte { return bytes.Repeat([]byte{b}, users.KeySize) }

func TestKeys_sealOpen(t *testing.T) {
	k, err := users.NewKeys("k1", map[string][]byte{"k1": key(1)})
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := k.Seal("user=ann|client=app", []byte("rt-secret"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("rt-secret")) {
		t.Fatal("sealed bytes hold the plaintext")
	}
	got, id, err := k.Open("user=ann|client=app", sealed)
	if err != nil || string(got) != "rt-secret" || id != "k1" {
		t.Fatalf("Open = %q, %q, %v; want rt-secret, k1", got, id, err)
	}
	if _, _, err := k.Open("user=bob|client=app", sealed); err == nil {
		t.Fatal("a token sealed for ann opened for bob")
	}
	tampered := bytes.Clone(sealed)
	tampered[len(tampered)-1] ^= 1
	if _, _, err := k.Open("user=ann|client=app", tampered); err == nil {
		t.Fatal("a tampered token opened")
	}
	again, _ := k.Seal("user=ann|client=app", []byte("rt-secret"))
	if bytes.Equal(again, sealed) {
		t.Fatal("two seals of the same token are equal; want a fresh nonce each time")
	}
}

func TestKeys_rotation(t *testing.T) {
	old, _ := users.NewKeys("k1", map[string][]byte{"k1": key(1)})
	sealedOld, _ := old.Seal("id", []byte("rt"))
	both, err := users.NewKeys("k2", map[string][]byte{"k1": key(1), "k2": key(2)})
	if err != nil {
		t.Fatal(err)
	}
	if got, id, err := both.Open("id", sealedOld); err != nil || string(got) != "rt" || id != "k1" {
		t.Fatalf("old token with rotated keys: %q, %q, %v; want rt under k1", got, id, err)
	}
	sealedNew, _ := both.Seal("id", []byte("rt2"))
	if _, id, _ := both.Open("id", sealedNew); id != "k2" {
		t.Fatalf("new seal under %q; want the current key k2", id)
	}
	if _, _, err := old.Open("id", sealedNew); !errors.Is(err, users.ErrUnknownKey) {
		t.Fatalf("k2's token with only k1: err = %v; want ErrUnknownKey", err)
	}
}

func TestParseKeys(t *testing.T) {
	k1 := base64.StdEncoding.EncodeToString(key(1))
	k2 := base64.RawURLEncoding.EncodeToString(key(2))
	k, err := users.ParseKeys(" k2:" + k2 + ", k1:" + k1)
	if err != nil {
		t.Fatal(err)
	}
	if k.Current() != "k2" || fmt.Sprint(k.IDs()) != "[k1 k2]" {
		t.Fatalf("current %q ids %v; want k2 of [k1 k2]", k.Current(), k.IDs())
	}
	short := base64.StdEncoding.EncodeToString([]byte("tooshortsecretvalue"))
	for _, spec := range []string{"", "nokey", "k1:!!!", "k1:" + short, "bad id:" + k1, "k1:" + k1 + ",k1:" + k1} {
		_, err := users.ParseKeys(spec)
		if err == nil {
			t.Errorf("ParseKeys(%q) = nil error; want one", spec)
			continue
		}
		for _, secret := range []string{k1, short} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("ParseKeys(%q) error %q holds the key", spec, err)
			}
		}
	}
}

func TestKeys_neverPrinted(t *testing.T) {
	k, _ := users.NewKeys("k1", map[string][]byte{"k1": []byte("0123456789abcdef0123456789ABCDEF")})
	wrapper := struct{ Keys *users.Keys }{k}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%q", "%d"} {
		for _, v := range []any{k, wrapper, &wrapper} {
			out := fmt.Sprintf(verb, v)
			if strings.Contains(out, "0123456789abcdef") || strings.Contains(out, fmt.Sprintf("%x", "0123456789abcdef")) {
				t.Errorf("%s of %T prints the key: %s", verb, v, out)
			}
		}
	}
}
