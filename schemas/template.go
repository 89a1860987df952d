// Package schemas holds roster's file templates as data (columns, types,
// required flags, limits, aliases), the Arrow schemas built from them, and
// the SQL migrations of the database.
package schemas

import (
	"regexp"
	"strings"
)

// Kind is the kind of an uploaded file, decided from its header.
type Kind string

// The two file kinds of FILE_RULES.md.
const (
	KindUsers       Kind = "users"
	KindDepartments Kind = "departments"
)

// Type is how a column's text is normalized and checked.
type Type int

// Column types.
const (
	Text       Type = iota // trimmed text
	Email                  // trimmed, lower-cased, syntax-checked
	EmployeeID             // case-sensitive, one leading apostrophe removed
	Date                   // ISO or the tenant's locale format
	Bool                   // true/yes/1/x or false/no/0/empty
	Custom                 // stored as text in the custom map
)

// Column is one column of a file template.
type Column struct {
	Name     string   // canonical name, as in FILE_RULES.md
	Aliases  []string // other accepted header names
	Type     Type
	Required bool // the file must have the column and every row a value
	MaxLen   int  // maximum length in characters; 0 = unlimited
	// RequiredCode and TooLongCode are the issue codes for an empty
	// required value and an over-long value.
	RequiredCode string
	TooLongCode  string
	Help         string
}

// TooLong reports whether v has more characters than the column allows.
// No text has more characters than bytes, so only a value longer than the
// limit in bytes is counted (counting every cell was 7 ms of a 100k-row
// file's validate).
func (c Column) TooLong(v string) bool {
	return c.MaxLen > 0 && len(v) > c.MaxLen && Len(v) > c.MaxLen
}

// Template is the column list of one file kind.
type Template struct {
	Kind    Kind
	Columns []Column
}

// User-file column names.
const (
	ColEmail            = "email"
	ColFirstName        = "first_name"
	ColLastName         = "last_name"
	ColEmployeeID       = "employee_id"
	ColManagerEmail     = "manager_email"
	ColManagerID        = "manager_id"
	ColDepartment       = "department_name"
	ColTitle            = "title"
	ColLocation         = "location"
	ColStartDate        = "start_date"
	ColDeactivationDate = "deactivation_date"
)

// Department-file column names.
const (
	ColName       = "name"
	ColParent     = "parent"
	ColDeactivate = "deactivate"
)

// RowColumn is the name of the Arrow column that carries each record's
// source row number (the spreadsheet row: the header is row 1).
const RowColumn = "_row"

// Users is the user-file template.
func Users() Template {
	return Template{Kind: KindUsers, Columns: []Column{
		{Name: ColEmail, Type: Email, Required: true, MaxLen: 254, RequiredCode: "email_required", TooLongCode: "email_too_long", Help: "the user's e-mail address; trimmed and lower-cased"},
		{Name: ColFirstName, Type: Text, Required: true, MaxLen: 254, RequiredCode: "first_name_required", TooLongCode: "first_name_too_long", Help: "given name"},
		{Name: ColLastName, Type: Text, Required: true, MaxLen: 150, RequiredCode: "last_name_required", TooLongCode: "last_name_too_long", Help: "family name"},
		{Name: ColEmployeeID, Type: EmployeeID, Help: "the HR system's id; case-sensitive, leading zeros kept, one leading apostrophe removed"},
		{Name: ColManagerEmail, Type: Email, MaxLen: 254, TooLongCode: "field_too_long", Help: "the manager's e-mail"},
		{Name: ColManagerID, Type: EmployeeID, Help: "the manager's employee_id"},
		{Name: ColDepartment, Aliases: []string{"department"}, Type: Text, MaxLen: 254, TooLongCode: "field_too_long", Help: "department name; unknown departments are created"},
		{Name: ColTitle, Type: Text, MaxLen: 254, TooLongCode: "field_too_long", Help: "job title"},
		{Name: ColLocation, Type: Text, MaxLen: 254, TooLongCode: "field_too_long", Help: "work location"},
		{Name: ColStartDate, Type: Date, Help: "first day of work"},
		{Name: ColDeactivationDate, Type: Date, Help: "last day: today or past deactivates, a future date is scheduled"},
	}}
}

// Departments is the department-file template.
func Departments() Template {
	return Template{Kind: KindDepartments, Columns: []Column{
		{Name: ColName, Type: Text, Required: true, MaxLen: 254, RequiredCode: "department_name_required", TooLongCode: "field_too_long", Help: "department name, matched case-insensitively"},
		{Name: ColParent, Type: Text, MaxLen: 254, TooLongCode: "field_too_long", Help: "parent department name"},
		{Name: ColDeactivate, Type: Bool, Help: "true/yes/1/x to deactivate"},
	}}
}

// ForKind returns the template of kind k.
func ForKind(k Kind) Template {
	if k == KindDepartments {
		return Departments()
	}
	return Users()
}

var customRE = regexp.MustCompile(`^custom_[0-9]+$`)

// NormalizeHeader is how header names are compared: trimmed, lower-cased.
func NormalizeHeader(h string) string { return strings.ToLower(strings.TrimSpace(h)) }

// Lookup maps a header name to the template column it names. Custom columns
// (custom_N, or one of the tenant's custom field names) map to a Custom column
// of that name. ok is false for a column the template does not know.
func (t Template) Lookup(header string, customFields []string) (Column, bool) {
	h := NormalizeHeader(header)
	for _, c := range t.Columns {
		if c.Name == h {
			return c, true
		}
		for _, a := range c.Aliases {
			if a == h {
				return c, true
			}
		}
	}
	if t.Kind == KindUsers {
		if customRE.MatchString(h) {
			return Column{Name: h, Type: Custom}, true
		}
		for _, f := range customFields {
			if NormalizeHeader(f) == h {
				return Column{Name: h, Type: Custom}, true
			}
		}
	}
	return Column{}, false
}

// DetectKind decides a file's kind from its header names (FILE_RULES.md
// "kind"). ok is false when neither template matches.
func DetectKind(headers []string) (Kind, bool) {
	hasName := false
	for _, h := range headers {
		switch NormalizeHeader(h) {
		case ColEmail, ColFirstName, ColLastName, ColEmployeeID:
			return KindUsers, true
		case ColName:
			hasName = true
		}
	}
	if hasName {
		return KindDepartments, true
	}
	return "", false
}
