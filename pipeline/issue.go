package pipeline

import "sort"

// Severity of an issue.
type Severity string

// Severities, as stored in the ledger and printed in reports.
const (
	SeverityError   Severity = "error"
	SeverityWarning Severity = "warning"
	SeverityInfo    Severity = "info"
)

// Issue is one problem found in a file: at a row and column, or for the
// whole file (Row 0, no column).
type Issue struct {
	Row      int      `json:"row"`
	Column   string   `json:"column"`
	Code     string   `json:"code"`
	Severity Severity `json:"severity"`
	Message  string   `json:"message"`
	Value    string   `json:"value,omitempty"`
}

// DefaultIssueLimit is how many issues of one file are kept in detail. A file
// where every one of a million rows is wrong must not produce a million-row
// ledger or report; the counts stay exact and the report says what was cut.
const DefaultIssueLimit = 10_000

// Issues collects a file's issues: counts are always exact, details are
// kept up to Limit.
type Issues struct {
	Limit    int
	list     []Issue
	Errors   int
	Warnings int
	Infos    int
}

// Add records an issue.
func (s *Issues) Add(i Issue) {
	switch i.Severity {
	case SeverityError:
		s.Errors++
	case SeverityWarning:
		s.Warnings++
	default:
		s.Infos++
	}
	limit := s.Limit
	if limit == 0 {
		limit = DefaultIssueLimit
	}
	if len(s.list) < limit {
		s.list = append(s.list, i)
	}
}

// Total is the number of issues recorded, kept in detail or not.
func (s *Issues) Total() int { return s.Errors + s.Warnings + s.Infos }

// Truncated reports how many issues were counted but not kept.
func (s *Issues) Truncated() int { return s.Total() - len(s.list) }

// List returns the kept issues ordered by row, then column, then code, so
// reports read top to bottom like the file.
func (s *Issues) List() []Issue {
	sort.SliceStable(s.list, func(a, b int) bool {
		x, y := s.list[a], s.list[b]
		if x.Row != y.Row {
			return x.Row < y.Row
		}
		if x.Column != y.Column {
			return x.Column < y.Column
		}
		return x.Code < y.Code
	})
	return s.list
}
