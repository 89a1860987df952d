package validate_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/stages/normalize"
	"github.com/roster-hr/roster/stages/parse"
	"github.com/roster-hr/roster/stages/validate"
)

func build(t *testing.T, sp pipeline.Spec) pipeline.Stage {
	t.Helper()
	s, err := sp.New(sp.Defaults())
	if err != nil {
		t.Fatal(err)
	}
	return s.(pipeline.Stage)
}

// TestDuplicateDetailsPastTheLimit: a file with more duplicate issues than
// the ledger keeps details of (6,000 e-mails on two rows each: 12,000
// issues, 10,000 kept) keeps the same details every time, those of the
// first rows, in row order.
func TestDuplicateDetailsPastTheLimit(t *testing.T) {
	var b strings.Builder
	b.WriteString("employee_id,email,first_name,last_name\n")
	const pairs = 6000
	for i := 0; i < 2*pairs; i++ {
		fmt.Fprintf(&b, "E%d,dup%d@example.com,F,L\n", i, i/2)
	}
	path := filepath.Join(t.TempDir(), "users.csv")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	run := &pipeline.Run{Tenant: pipeline.NewTenant("t")}
	stages := []pipeline.Stage{build(t, parse.Spec()), build(t, normalize.Spec()), build(t, validate.Spec())}
	var lists [][]pipeline.Issue
	for k := 0; k < 3; k++ {
		f := &pipeline.File{Name: "users.csv", Plain: path}
		for _, s := range stages {
			if _, err := s.Process(context.Background(), run, f); err != nil {
				t.Fatal(err)
			}
		}
		if f.Issues.Total() != 2*pairs || f.Issues.Truncated() != 2*pairs-pipeline.DefaultIssueLimit {
			t.Fatalf("%d issues, %d without details; want %d and %d", f.Issues.Total(), f.Issues.Truncated(), 2*pairs, 2*pairs-pipeline.DefaultIssueLimit)
		}
		lists = append(lists, f.Issues.List())
	}
	for k := 1; k < len(lists); k++ {
		if !reflect.DeepEqual(lists[0], lists[k]) {
			t.Fatal("the same file kept different issue details")
		}
	}
	for i, is := range lists[0] {
		if want := i + 2; is.Row != want || is.Code != "duplicate_email" {
			t.Fatalf("detail %d: row %d %s, want row %d duplicate_email", i, is.Row, is.Code, want)
		}
	}
}

// TestDuplicatesFarApart: in a file large enough to be split into many
// hash groups, a value's rows are found however far apart they are, all
// rejected, and each issue names them in file order.
func TestDuplicatesFarApart(t *testing.T) {
	const n = 30000
	var b strings.Builder
	b.WriteString("employee_id,email,first_name,last_name\n")
	eid := func(i int) string {
		switch {
		case i == n-1 || i == n/2:
			return "E7" // rows 9, 15,002 and 30,001 (row 1 is the header)
		case i%1000 == 999:
			return fmt.Sprintf("E%d", i-990) // a repeat of row i-990's id
		}
		return fmt.Sprintf("E%d", i)
	}
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "%s,u%d@example.com,F,L\n", eid(i), i)
	}
	path := filepath.Join(t.TempDir(), "users.csv")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	f := &pipeline.File{Name: "users.csv", Plain: path}
	run := &pipeline.Run{Tenant: pipeline.NewTenant("t")}
	for _, sp := range []pipeline.Spec{parse.Spec(), normalize.Spec(), validate.Spec()} {
		if _, err := build(t, sp).Process(context.Background(), run, f); err != nil {
			t.Fatal(err)
		}
	}
	got := map[int]string{}
	for _, is := range f.Issues.List() {
		if is.Code != "duplicate_employee_id" {
			t.Fatalf("row %d: %s: %s", is.Row, is.Code, is.Message)
		}
		got[is.Row] = is.Message
	}
	want := map[int]string{
		9: "9, 15002, 30001", 15002: "9, 15002, 30001", 30001: "9, 15002, 30001",
	}
	for i := 999; i < n; i += 1000 {
		if i == n-1 {
			continue
		}
		rows := fmt.Sprintf("%d, %d", i-990+2, i+2)
		want[i-990+2], want[i+2] = rows, rows
	}
	if len(got) != len(want) {
		t.Fatalf("%d rows with a duplicate issue, want %d", len(got), len(want))
	}
	for row, rows := range want {
		if !strings.Contains(got[row], "appears on rows "+rows+";") {
			t.Errorf("row %d: %q, want it to name rows %s", row, got[row], rows)
		}
		if !f.Rejected.Has(row - 2) {
			t.Errorf("row %d is not rejected", row)
		}
	}
}
