// Package report tells the customer what happened to each file: a CSV
// report of every issue in /reports/<file>.report.csv of their SFTP home,
// and the upload moved to /processed (applied or duplicate) or /failed
// (rejected). A file that failed for a system reason stays in /incoming to
// be taken again.
package report

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/roster-hr/roster/pipeline"
)

// Spec declares the stage.
func Spec() pipeline.Spec {
	return pipeline.Spec{
		Name:    "report",
		Summary: "Writes /reports/<file>.report.csv when a file has issues and moves the upload to /processed or /failed in the tenant's SFTP home.",
		Ordered: true,
		Always:  true,
		New:     func(pipeline.Options) (any, error) { return stage{}, nil },
	}
}

type stage struct{}

// Name is the report's file name for an upload. The upload's name is the
// customer's (or a foreign server's, or was planted on disk): characters
// that would break a listing, a log line or an e-mail header, or make the
// name display as another, become spaces, so the report gets a name the
// embedded server lists as it is. These are control characters, invalid
// UTF-8, U+2028/U+2029, backslashes and the bidirectional controls; e-mail's
// oneLine maps a subset of them the same way, so the name an e-mail gives,
// Name(oneLine(n)), is the report's Name(n).
func Name(upload string) string {
	if !strings.ContainsFunc(upload, unsafeNameRune) && utf8.ValidString(upload) {
		return upload + ".report.csv"
	}
	return strings.Map(func(r rune) rune {
		if unsafeNameRune(r) {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(upload, "\uFFFD")) + ".report.csv"
}

func unsafeNameRune(r rune) bool {
	return unicode.IsControl(r) || r == utf8.RuneError || r == '\u2028' || r == '\u2029' || r == '\\' ||
		r == 0x061c || r == 0x200e || r == 0x200f || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069)
}

func (stage) Process(ctx context.Context, run *pipeline.Run, f *pipeline.File) (pipeline.Stats, error) {
	if run.DryRun || !f.Remote || run.Store == nil || f.Status == pipeline.StatusFailed {
		return pipeline.Stats{}, nil
	}
	n := int64(len(f.Issues.List()))
	if f.Issues.Total() > 0 && f.Status != pipeline.StatusDuplicate {
		if err := run.Store.PutReport(ctx, Name(f.Name), CSV(f)); err != nil {
			return pipeline.Stats{}, fmt.Errorf("report: upload: %w", err)
		}
		// The e-mail points at the report, so it goes once the report exists.
		if run.Notify != nil {
			if err := run.Notify.FileReport(ctx, run.Tenant, f, run.ID); err != nil && run.Log != nil {
				run.Log.Warn("report e-mail not sent", "file", f.Name, "err", err)
			}
		}
	}
	ok := f.Status == pipeline.StatusApplied || f.Status == pipeline.StatusDuplicate
	if err := run.Store.Finish(ctx, f.Source, ok); err != nil {
		return pipeline.Stats{}, fmt.Errorf("report: move %s: %w", f.Name, err)
	}
	return pipeline.Stats{RowsIn: n, RowsOut: n}, nil
}

// CSV renders a file's issues as the customer's report: row, column, code,
// severity, message, value. A closing line says when issues were cut.
func CSV(f *pipeline.File) []byte {
	var buf bytes.Buffer
	buf.WriteString("\uFEFF") // Excel opens UTF-8 correctly only with a BOM
	w := csv.NewWriter(&buf)
	w.Write([]string{"row", "column", "code", "severity", "message", "value"}) //nolint:errcheck // bytes.Buffer
	for _, is := range f.Issues.List() {
		row := ""
		if is.Row > 0 {
			row = strconv.Itoa(is.Row)
		}
		w.Write([]string{row, Neutralize(is.Column), is.Code, string(is.Severity), Neutralize(is.Message), Neutralize(is.Value)}) //nolint:errcheck
	}
	if cut := f.Issues.Truncated(); cut > 0 {
		w.Write([]string{"", "", "issues_truncated", "info", //nolint:errcheck
			fmt.Sprintf("%d more issues (%d errors, %d warnings in all) are not listed; fix the ones above and send the file again", cut, f.Issues.Errors, f.Issues.Warnings), ""})
	}
	w.Flush()
	return buf.Bytes()
}

// Neutralize defuses a cell a spreadsheet would run as a formula (it starts
// with = + - @, or a tab or CR) by prefixing an apostrophe (OWASP CSV
// injection).
func Neutralize(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}
