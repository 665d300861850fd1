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
		"GET /inbox as ann: 200 3 unread messages\nGET /inbox as ann: 200 3 unread messages",
		"refresh token rotated once and stored (version 2); token answers: 2 (the sign-in, one refresh)",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
