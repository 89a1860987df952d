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
