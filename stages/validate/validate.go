// Package validate checks each typed row against the file template:
// required fields, length limits, e-mail syntax, and the duplicates inside
// the file. A row with an error in a required field is rejected whole; an
// error in an optional field drops only that field, and the row applies
// without it (FILE_RULES.md). Checks that need the current directory
// (managers, e-mails in use, seats) belong to diff.
package validate

import (
	"context"
	"fmt"
	"strings"

	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/schemas"
)

// Spec declares the stage.
func Spec() pipeline.Spec {
	return pipeline.Spec{
		Name:    "validate",
		Summary: "Checks required fields, length limits and e-mail syntax, and rejects every row of a duplicate employee_id, email or department name.",
		New:     func(pipeline.Options) (any, error) { return stage{}, nil },
	}
}

type stage struct{}

func (stage) Process(ctx context.Context, run *pipeline.Run, f *pipeline.File) (pipeline.Stats, error) {
	// dup finds, per identity column, the values carried by more than one
	// row. Most values are seen once, so the first row of each is kept in a
	// map of plain ints and only clashes get a list (a list per value made a
	// million-row file two million small allocations).
	type dupCol struct {
		col, code, what string
		first           map[string]int32   // value → first 0-based row
		clash           map[string][]int32 // value → every 0-based row, when more than one
	}
	var dups []*dupCol
	switch f.Kind {
	case schemas.KindUsers:
		dups = []*dupCol{
			{col: schemas.ColEmployeeID, code: schemas.CodeDuplicateEmployeeID, what: "employee_id"},
			{col: schemas.ColEmail, code: schemas.CodeDuplicateEmail, what: "email"},
		}
	case schemas.KindDepartments:
		dups = []*dupCol{{col: schemas.ColName, code: schemas.CodeDuplicateDepartment, what: "department name"}}
	}
	for _, d := range dups {
		d.first, d.clash = make(map[string]int32, f.Rows), map[string][]int32{}
	}
	// src[pos] is the source row of the pos-th row.
	src := make([]int32, 0, f.Rows)
	base := 0
	for _, rec := range f.Batches {
		if err := ctx.Err(); err != nil {
			return pipeline.Stats{}, err
		}
		rows := rec.Column(0).(*array.Int32)
		src = append(src, rows.Int32Values()...)
		for ci, c := range f.Columns {
			str, ok := rec.Column(ci + 1).(*array.String)
			if !ok {
				continue
			}
			var dup *dupCol
			for _, d := range dups {
				if d.col == c.Name {
					dup = d
				}
			}
			for i := 0; i < str.Len(); i++ {
				pos := base + i
				if str.IsNull(i) {
					continue
				}
				// A row already rejected reports one reason: its required
				// fields are not checked again. They still count for the
				// duplicate checks below, so that whether two rows clash
				// does not depend on the order of the columns (a row
				// rejected for first_name still holds its email).
				quiet := f.Rejected.Has(pos) && c.Required
				row := int(rows.Value(i))
				v := str.Value(i)
				issue := func(code, msg string) {
					if quiet {
						return
					}
					f.Issues.Add(pipeline.Issue{Row: row, Column: c.Name, Code: code, Severity: pipeline.SeverityError, Message: msg, Value: clip(v)})
					if c.Required {
						f.Rejected.Add(pos)
					} else {
						f.SkipField(c.Name, pos)
					}
				}
				switch {
				case v == "" && c.Required:
					issue(c.RequiredCode, fmt.Sprintf("%s is required; the row was not applied", c.Name))
					continue
				case c.MaxLen > 0 && schemas.Len(v) > c.MaxLen:
					issue(c.TooLongCode, fmt.Sprintf("%s is %d characters, over the limit of %d%s", c.Name, schemas.Len(v), c.MaxLen, consequence(c)))
					continue
				case c.Name == schemas.ColEmail && !schemas.ValidEmail(v):
					issue(schemas.CodeEmailInvalid, fmt.Sprintf("%q is not a valid e-mail address (expected name@company.com); the row was not applied", v))
					continue
				}
				if dup != nil && v != "" {
					key := v
					if f.Kind == schemas.KindDepartments {
						key = schemas.Key(v)
					}
					if p, seen := dup.first[key]; !seen {
						dup.first[key] = int32(pos)
					} else if dup.clash[key] == nil {
						dup.clash[key] = []int32{p, int32(pos)}
					} else {
						dup.clash[key] = append(dup.clash[key], int32(pos))
					}
				}
			}
		}
		base += int(rec.NumRows())
	}
	for _, d := range dups {
		for v, positions := range d.clash {
			var srcRows []string
			for _, p := range positions {
				srcRows = append(srcRows, fmt.Sprint(src[p]))
			}
			for _, p := range positions {
				f.Issues.Add(pipeline.Issue{Row: int(src[p]), Column: d.col, Code: d.code, Severity: pipeline.SeverityError, Value: clip(v),
					Message: fmt.Sprintf("the %s %q appears on rows %s; roster cannot know which one is right, so none of them was applied", d.what, v, strings.Join(srcRows, ", "))})
				f.Rejected.Add(int(p))
			}
		}
	}
	accepted := 0
	for i := 0; i < f.Rows; i++ {
		if !f.Rejected.Has(i) {
			accepted++
		}
	}
	return pipeline.Stats{RowsIn: int64(f.Rows), RowsOut: int64(accepted)}, nil
}

func consequence(c schemas.Column) string {
	if c.Required {
		return "; the row was not applied"
	}
	return " (the row was applied without this field)"
}

// clip keeps reported values readable: a 200 MB cell is not echoed back.
func clip(v string) string {
	const max = 200
	if len(v) <= max {
		return v
	}
	cut := max
	for cut > 0 && v[cut]&0xC0 == 0x80 {
		cut--
	}
	return v[:cut] + "…"
}
