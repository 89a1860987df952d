package pipeline

import (
	"testing"
	"time"
)

// TestCopyLineDate: every day from year -1 to 10000 is written as
// time.Time writes it.
func TestCopyLineDate(t *testing.T) {
	from := time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC).Unix() / 86400
	to := time.Date(10001, 1, 1, 0, 0, 0, 0, time.UTC).Unix() / 86400
	var l CopyLine
	for days := from; days <= to; days++ {
		l.b, l.cols = l.b[:0], 0
		l.Date(int32(days))
		if want := time.Unix(days*86400, 0).UTC().Format(time.DateOnly); string(l.b) != want {
			t.Fatalf("day %d: %q, want %q", days, l.b, want)
		}
	}
}

// TestCopyLineText: escapes wherever they fall in a value, and the bytes
// between them as they are.
func TestCopyLineText(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", ""},
		{"plain", "plain"},
		{`\`, `\\`},
		{"a\tb\nc\rd\\e", `a\tb\nc\rd\\e`},
		{"tail\n", `tail\n`},
		{"\x01bell\x07", "\x01bell\x07"}, // other control bytes need no escape
		{"Zoë 東京 🙂", "Zoë 東京 🙂"},
		{`\N`, `\\N`},
	} {
		var l CopyLine
		l.Text(c.in)
		if string(l.b) != c.want {
			t.Errorf("Text(%q) = %q, want %q", c.in, l.b, c.want)
		}
	}
}
