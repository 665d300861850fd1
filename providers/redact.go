package providers

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// clean bounds s to maxCleanLen bytes (plus "..."), maps control
// characters to spaces and redacts each of forms, the forms the request's
// secrets took (see [redact]).
func clean(s string, forms []string) string {
	truncated := len(s) > maxCleanLen
	if truncated {
		s = s[:cutBefore(s, maxCleanLen, forms)]
	}
	s = strings.Map(printable, s)
	mapped := make([]string, len(forms))
	for i, v := range forms {
		mapped[i] = strings.Map(printable, v)
	}
	s = redact(s, mapped)
	if truncated {
		s += "..."
	}
	return s
}

// maxCleanLen bounds the OAuth error fields kept in a RetrieveError.
const maxCleanLen = 512

// redactedMark replaces secrets in error texts.
const redactedMark = "[redacted]"

// printable maps control characters to spaces, so an error text stays on
// one line and cannot drive a terminal.
func printable(r rune) rune {
	if r < ' ' || r == 0x7f {
		return ' '
	}
	return r
}

// cutBefore returns where to cut s to at most n bytes without cutting
// through one of forms: n, or the start of an occurrence that would
// straddle it, so no prefix of the secret is left at the end.
func cutBefore(s string, n int, forms []string) int {
	for moved := true; moved; {
		moved = false
		for _, v := range forms {
			lo, hi := max(0, n-len(v)+1), min(len(s), n+len(v)-1)
			if lo >= hi {
				continue
			}
			if i := strings.Index(s[lo:hi], v); i >= 0 {
				n, moved = lo+i, true // lo+i < n < lo+i+len(v)
			}
		}
	}
	return n
}

// redact replaces the occurrences of each of forms in s with
// "[redacted]": every occurrence of a long form (longSecret bytes or
// more: assertions, tokens, most client secrets), and the whole-token
// occurrences of a short one. An occurrence is a whole token when neither
// the character before it nor the one after it is part of a token value:
// a letter, a digit, or one of -._~+/% (and =, after it only: base64
// padding extends a value, but "name=" ends before one). Full stops right
// after it count as the end of a sentence when nothing of a value follows
// them. So an echoed secret is redacted in `client_secret=s&x`, `"s"`,
// `Basic czpz` or `value s.`, but a short secret is not masked inside a
// longer word ("s" in "slow_down"), which would make error texts
// unreadable. A short secret that is a whole word of the text is redacted
// all the same: it cannot be told from an echoed value.
//
// Redacting one occurrence can turn a neighbour into a whole token, so
// passes repeat until nothing changes. Each pass that changes something
// removes secret bytes that lie outside any marker, so that ends, unless
// a form contains the marker's own text; then a single pass is made.
func redact(s string, forms []string) string {
	passes := len(s) + 1
	for _, v := range forms {
		if strings.Contains(v, "redacted") {
			passes = 1
		}
	}
	for ; passes > 0; passes-- {
		changed := false
		for _, v := range forms {
			var c bool
			s, c = redactPass(s, v)
			changed = changed || c
		}
		if !changed {
			break
		}
	}
	return s
}

// redactPass replaces the whole-token occurrences of v in s, left to
// right, and reports whether it replaced any.
func redactPass(s, v string) (string, bool) {
	if v == "" || !strings.Contains(s, v) {
		return s, false
	}
	var b strings.Builder
	copied := 0 // s[:copied] is in b
	for i := 0; i+len(v) <= len(s); {
		j := strings.Index(s[i:], v)
		if j < 0 {
			break
		}
		start, end := i+j, i+j+len(v)
		// copied > 0 only after a replacement, so an occurrence starting
		// there follows the marker's "]" in the output.
		before := start == 0 || (copied > 0 && start == copied)
		if !before {
			r, _ := utf8.DecodeLastRuneInString(s[:start])
			before = !valueRune(r) || r == '='
		}
		after := wordEnds(s[end:])
		if len(v) < longSecret && (!before || !after) {
			i = start + 1
			continue
		}
		b.WriteString(s[copied:start])
		b.WriteString(redactedMark)
		copied, i = end, end
	}
	if copied == 0 {
		return s, false
	}
	b.WriteString(s[copied:])
	return b.String(), true
}

// longSecret is the length, in bytes, from which a secret's form is
// redacted wherever it occurs, even inside a longer value: a string that
// long is no common word, so masking it never makes a text unreadable.
const longSecret = 16

// wordEnds reports whether a value ends right before rest: rest is empty,
// starts with a character that is not part of a value, or starts with
// full stops that end a sentence (followed by nothing, or by such a
// character).
func wordEnds(rest string) bool {
	rest = strings.TrimLeft(rest, ".")
	if rest == "" {
		return true
	}
	r, _ := utf8.DecodeRuneInString(rest)
	return !valueRune(r)
}

// valueRune reports whether r can be part of a token value: a letter, a
// digit, or one of -._~+/=% (URL-safe, URL-encoded and base64 text).
func valueRune(r rune) bool {
	return unicode.IsLetter(r) || unicode.IsDigit(r) || strings.ContainsRune("-._~+/=%", r)
}
