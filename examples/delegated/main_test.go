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
		"refresh token sealed and stored (version 1)",
		"member 1: GET /inbox as ann: 200 3 unread messages\nmember 1: GET /inbox as ann: 200 3 unread messages",
		"member 3: GET /inbox as ann: 200 3 unread messages",
		"stored (version 4); token answers: 4 (the sign-in, 3 refreshes), refresh tokens reused: 0",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
