package email

import (
	"testing"

	"github.com/roster-hr/roster/stages/report"
)

// TestReportNameAgrees: the e-mail names the report by report.Name of the
// one-line file name; for hostile names (newlines, escapes, invalid UTF-8,
// bidirectional overrides) that must be the name the report stage wrote.
func TestReportNameAgrees(t *testing.T) {
	for _, name := range []string{"users.csv", "users\n.csv", "users\r\n.csv", "users\x1b[31m.csv", "users\xff\xfe.csv",
		"users\u2028.csv", "users\u202evsc.exe", "a\\b.csv", "ｕsers.csv", "équipe été.csv"} {
		if got, want := report.Name(oneLine(name)), report.Name(name); got != want {
			t.Errorf("%q: the e-mail says %q, the report is %q", name, got, want)
		}
	}
}
