package main

import (
	"bytes"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRun(t *testing.T) {
	var out bytes.Buffer
	if err := run(&out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"client key: DPoP(ES256 ",
		"GET /orders: 200 ok (API nonce requests so far: 1)\nGET /orders: 200 ok (API nonce requests so far: 1)",
		"token endpoint nonce requests: 1; tokens issued: 1",
		"the token without its key: 401",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
