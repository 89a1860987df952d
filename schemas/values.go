package schemas

import (
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Date formats a tenant may choose for its locale; ISO is always accepted.
const (
	DateUS = "MM/DD/YYYY" // default, US English
	DateUK = "DD/MM/YYYY" // UK English
)

// ParseDate parses an ISO date (YYYY-MM-DD) or a date in the tenant's locale
// format, with or without leading zeros. Two-digit years and times of day
// are refused: a date is never guessed.
func ParseDate(s, format string) (time.Time, bool) {
	var y, m, d int
	var ok bool
	if strings.Contains(s, "-") {
		y, m, d, ok = parts(s, '-', 0, 1, 2)
	} else if strings.Contains(s, "/") {
		if format == DateUK {
			y, m, d, ok = parts(s, '/', 2, 1, 0)
		} else {
			y, m, d, ok = parts(s, '/', 2, 0, 1)
		}
	}
	if !ok || y < 1000 || m < 1 || m > 12 || d < 1 || d > 31 {
		return time.Time{}, false
	}
	t := time.Date(y, time.Month(m), d, 0, 0, 0, 0, time.UTC)
	if t.Day() != d { // 31 April, 30 February
		return time.Time{}, false
	}
	return t, true
}

// parts splits s into three numbers and returns them as year, month, day
// from the given positions. The year must have four digits.
func parts(s string, sep byte, yi, mi, di int) (y, m, d int, ok bool) {
	// Split by hand into a fixed array: strings.Split allocated a slice
	// for every date cell of a file (40 MB on a million rows).
	var f [3]string
	for i := 0; i < 2; i++ {
		k := strings.IndexByte(s, sep)
		if k < 0 {
			return 0, 0, 0, false
		}
		f[i], s = s[:k], s[k+1:]
	}
	if strings.IndexByte(s, sep) >= 0 {
		return 0, 0, 0, false
	}
	f[2] = s
	var n [3]int
	for i, p := range f {
		if p == "" || len(p) > 4 {
			return 0, 0, 0, false
		}
		v, err := strconv.Atoi(p)
		if err != nil || v < 0 || p[0] == '+' || p[0] == '-' {
			return 0, 0, 0, false
		}
		if i == yi && len(p) != 4 {
			return 0, 0, 0, false
		}
		if i != yi && len(p) > 2 {
			return 0, 0, 0, false
		}
		n[i] = v
	}
	return n[yi], n[mi], n[di], true
}

// ParseBool reads a department file's deactivate cell.
func ParseBool(s string) (v, ok bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true", "yes", "1", "x", "y":
		return true, true
	case "", "false", "no", "0", "n":
		return false, true
	}
	return false, false
}

// NormalizeEmployeeID removes one leading apostrophe (Excel's
// keep-leading-zeros trick) and surrounding spaces; leading zeros stay.
func NormalizeEmployeeID(s string) string {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(s, "'")
	return strings.TrimSpace(s)
}

// NormalizeEmail trims and lower-cases an address.
func NormalizeEmail(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

// Key is how department names are matched: trimmed, case-insensitive.
func Key(name string) string { return strings.ToLower(strings.TrimSpace(name)) }

// ValidEmail checks the local@domain.tld shape of a normalized address.
func ValidEmail(s string) bool {
	at := strings.IndexByte(s, '@')
	if at <= 0 || at != strings.LastIndexByte(s, '@') || at > 64 {
		return false
	}
	local, domain := s[:at], s[at+1:]
	if local[0] == '.' || local[len(local)-1] == '.' || strings.Contains(local, "..") {
		return false
	}
	for _, c := range []byte(local) {
		if !(isAlnum(c) || strings.IndexByte(".!#$%&'*+/=?^_`{|}~-", c) >= 0) {
			return false
		}
	}
	// Label by label without a slice of them (one per address, 30 MB of
	// garbage on a million rows).
	labels, tld := 0, ""
	for l := range strings.SplitSeq(domain, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, c := range []byte(l) {
			if !(isAlnum(c) || c == '-') {
				return false
			}
		}
		labels, tld = labels+1, l
	}
	if labels < 2 || len(tld) < 2 {
		return false
	}
	for _, c := range []byte(tld) {
		if c >= '0' && c <= '9' {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
}

// Len is a value's length in characters, as limits count it.
func Len(s string) int { return utf8.RuneCountInString(s) }
