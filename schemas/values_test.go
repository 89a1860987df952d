package schemas

import (
	"strings"
	"testing"
	"time"
)

func TestParseDate(t *testing.T) {
	d := func(y, m, day int) time.Time { return time.Date(y, time.Month(m), day, 0, 0, 0, 0, time.UTC) }
	cases := []struct {
		in, format string
		want       time.Time
		ok         bool
	}{
		{"2026-03-04", DateUS, d(2026, 3, 4), true},
		{"2026-3-4", DateUK, d(2026, 3, 4), true},
		{"03/04/2026", DateUS, d(2026, 3, 4), true},
		{"3/4/2026", DateUS, d(2026, 3, 4), true},
		{"03/04/2026", DateUK, d(2026, 4, 3), true},
		{"31/12/2025", DateUK, d(2025, 12, 31), true},
		{"31/12/2025", DateUS, time.Time{}, false}, // month 31
		{"02/30/2026", DateUS, time.Time{}, false}, // 30 February
		{"2/29/2024", DateUS, d(2024, 2, 29), true},
		{"2/29/2025", DateUS, time.Time{}, false},
		{"1/2/26", DateUS, time.Time{}, false}, // two-digit year
		{"26-01-02", DateUS, time.Time{}, false},
		{"2026-01-02T10:00", DateUS, time.Time{}, false}, // a time of day
		{"2026-01-02 10:00", DateUS, time.Time{}, false},
		{"+2026-01-02", DateUS, time.Time{}, false},
		{"2026/01/02", DateUS, time.Time{}, false},
		{"2026-01-02-03", DateUS, time.Time{}, false}, // four parts
		{"2026--02", DateUS, time.Time{}, false},
		{"2026-01-", DateUS, time.Time{}, false},
		{"1/2/2026/", DateUS, time.Time{}, false},
		{"1/2", DateUS, time.Time{}, false},
		{"", DateUS, time.Time{}, false},
		{"tomorrow", DateUS, time.Time{}, false},
	}
	for _, c := range cases {
		got, ok := ParseDate(c.in, c.format)
		if ok != c.ok || !got.Equal(c.want) {
			t.Errorf("ParseDate(%q, %s) = %v, %v; want %v, %v", c.in, c.format, got, ok, c.want, c.ok)
		}
	}
}

func TestValidEmail(t *testing.T) {
	for in, want := range map[string]bool{
		"ada@example.com": true, "a.b+c@sub.example.co.uk": true, "o'brien@example.ie": true,
		"ada@": false, "@example.com": false, "ada@example": false, "ada@@example.com": false,
		"ada@exa mple.com": false, ".ada@example.com": false, "ada..b@example.com": false,
		"ada@-example.com": false, "ada@example.c": false, "ada@example.123": false, "ada example.com": false,
		"ada@example..com": false, "ada@example.com.": false, "ada@.example.com": false, "ada@example.co-": false,
	} {
		if got := ValidEmail(in); got != want {
			t.Errorf("ValidEmail(%q) = %v, want %v", in, got, want)
		}
	}
}

func FuzzParseDate(f *testing.F) {
	for _, s := range []string{"2026-03-04", "3/4/2026", "31/12/2025", "1/2/26", "9999-99-99", "0/0/0000", "-1/-1/-2026"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, format := range []string{DateUS, DateUK} {
			d, ok := ParseDate(s, format)
			if !ok {
				continue
			}
			// Whatever is accepted is a real date that prints back as ISO
			// and parses to itself.
			again, ok2 := ParseDate(d.Format(time.DateOnly), format)
			if !ok2 || !again.Equal(d) || d.Year() < 1000 || d.Year() > 9999 {
				t.Fatalf("ParseDate(%q, %s) = %v does not round-trip", s, format, d)
			}
		}
	})
}

// TestColumnTooLong: the limit counts characters, not bytes: text of
// several-byte characters longer than the limit in bytes only is not too
// long; one character more is.
func TestColumnTooLong(t *testing.T) {
	c := Column{Name: "title", MaxLen: 4}
	for _, tc := range []struct {
		v    string
		want bool
	}{
		{"", false},
		{"abcd", false},
		{"abcde", true},
		{"éééé", false},                // 8 bytes, 4 characters
		{"ééééé", true},                // 10 bytes, 5 characters
		{"日本語テ", false},                // 12 bytes, 4 characters
		{"\xff\xff\xff\xff\xff", true}, // invalid bytes count one each
	} {
		if got := c.TooLong(tc.v); got != tc.want {
			t.Errorf("TooLong(%q) = %v, want %v", tc.v, got, tc.want)
		}
	}
	if (Column{Name: "free"}).TooLong(strings.Repeat("x", 1<<16)) {
		t.Error("a column without a limit found a value too long")
	}
}
