package export

import (
	_ "embed"
	"fmt"
	"strings"

	"github.com/apache/arrow/go/v17/arrow"
)

// SchemaVersion is written in every partition's manifest. Bump it when a
// table's columns change (added, removed, renamed or retyped).
const SchemaVersion = 1

// Table names: the first directory level of the export.
const (
	TableSnapshot   = "employee_snapshot"
	TableProfile    = "employee_profile_history"
	TableEvents     = "employee_events"
	TableDepartment = "department_hierarchy"
)

// Event types of employee_events.
const (
	EventHire             = "hire"
	EventTermination      = "termination"
	EventRehire           = "rehire"
	EventManagerChange    = "manager_change"
	EventDepartmentChange = "department_change"
	EventTitleChange      = "title_change"
	EventLocationChange   = "location_change"
	EventEmailChange      = "email_change"
)

// PathSeparator joins department names into department_path.
const PathSeparator = " > "

// column is one column of an exported table: its Arrow type (which
// decides the Parquet type), whether it may be null, and what it means (the
// data dictionary is generated from these).
type column struct {
	name     string
	typ      arrow.DataType
	nullable bool
	doc      string
}

// table is one exported table.
type table struct {
	name    string
	csvName string // the <Table> part of CSV file names
	doc     string
	cols    []column
	schema  *arrow.Schema
}

var (
	tString = arrow.BinaryTypes.String
	tDate   = arrow.FixedWidthTypes.Date32
	tTime   = &arrow.TimestampType{Unit: arrow.Microsecond, TimeZone: "UTC"}
	tInt64  = arrow.PrimitiveTypes.Int64
	tInt32  = arrow.PrimitiveTypes.Int32
	tBool   = arrow.FixedWidthTypes.Boolean
)

func col(name string, typ arrow.DataType, nullable bool, doc string) column {
	return column{name: name, typ: typ, nullable: nullable, doc: doc}
}

// Columns shared by the employee tables.
var (
	cTenant   = col("tenant_code", tString, false, "The tenant's ID in roster (also the `tenant=` partition directory).")
	cUserID   = col("user_id", tInt64, false, "roster's internal user ID: stable for the life of the user, even when the employee ID or e-mail changes. The join key across the employee tables.")
	cEID      = col("employee_id", tString, true, "The HR system's employee ID; null for users loaded without one.")
	cEmail    = col("email", tString, false, "Work e-mail address (lower case).")
	cFirst    = col("first_name", tString, false, "First name.")
	cLast     = col("last_name", tString, false, "Last name.")
	cMgrUID   = col("manager_user_id", tInt64, true, "The manager's `user_id`; null when the user has no manager.")
	cMgrEID   = col("manager_employee_id", tString, true, "The manager's employee ID as of the partition date.")
	cMgrEmail = col("manager_email", tString, true, "The manager's e-mail as of the partition date.")
	cDeptID   = col("department_id", tInt64, true, "roster's department ID (joins `department_hierarchy.department_id`); null when the user has no department.")
	cDeptName = col("department_name", tString, true, "Department name.")
	cDeptPath = col("department_path", tString, true, "The department's full path from the root, names joined by ` > ` (e.g. `Company > Engineering > Platform`), as of the partition date.")
	cTitle    = col("title", tString, false, "Job title (empty when none).")
	cLocation = col("location", tString, false, "Work location (empty when none).")
	cStart    = col("start_date", tDate, true, "Start (hire) date from the HR file; null when the file gave none.")
	cDeact    = col("deactivation_date", tDate, true, "Deactivation (termination) date from the HR file: past for a deactivated user, future for a scheduled one; null when none.")
	cActive   = col("active", tBool, false, "Whether the user is active (false: deactivated).")
	cCustom   = col("custom_fields", tString, false, "The user's custom field values (the tenant's custom columns) as a JSON object of strings, `{}` when none.")
	cLoad     = col("load_timestamp", tTime, false, "When roster recorded the data of this row (the time the run that changed it applied its file), in UTC. It is not the time of the export, so re-exports are identical.")
)

// The four tables, in the order they are written.
var (
	snapshotTable = newTable(TableSnapshot, "EmployeeSnapshot",
		"One row per user known on the partition date — the full population, deactivated users included — with the attributes the directory held for that date.",
		cTenant,
		col("snapshot_date", tDate, false, "The date the row describes (= `dt`)."),
		cUserID, cEID, cEmail, cFirst, cLast, cMgrUID, cMgrEID, cMgrEmail, cDeptID, cDeptName, cDeptPath,
		cTitle, cLocation, cStart, cDeact, cActive, cCustom,
		col("run_id", tInt64, false, "The run that last changed the user on or before the partition date."),
		cLoad)

	profileTable = newTable(TableProfile, "EmployeeProfileHistory",
		"One row per continuous state of a user (a slowly changing dimension, type 2): each state the runs of the partition date recorded, with the full attributes after the change and the dates it held. Reading every partition gives each user's complete history.",
		cTenant,
		col("snapshot_date", tDate, false, "The logical date of the run that recorded the state (= `dt`)."),
		cUserID, cEID, cEmail, cFirst, cLast, cMgrUID, cMgrEID, cMgrEmail, cDeptID, cDeptName, cDeptPath,
		cTitle, cLocation, cStart, cDeact, cActive, cCustom,
		col("effective_start", tDate, false, "First day of the state: the change's effective date (the run's logical date, or the deactivation date of a back-dated deactivation)."),
		col("effective_end", tDate, true, "First day the state no longer held (exclusive): the effective start of the user's next state known on the partition date; null while the state is current. Later partitions hold the states that follow."),
		col("change_action", tString, false, "What roster did: `create`, `update`, `deactivate`, `reactivate` or `schedule` (a future deactivation date set)."),
		col("changed_fields", tString, false, "The fields the change set, comma-separated and sorted (e.g. `department,title`)."),
		col("history_id", tInt64, true, "The `user_history` row the state comes from; null for the state a user was created with (roster records a creation on the user, `users.created_run_id`)."),
		col("run_id", tInt64, false, "The run that recorded the state."),
		cLoad)

	eventsTable = newTable(TableEvents, "EmployeeEvents",
		"One row per event the runs of the partition date recorded, each with its own effective date. Hires and terminations balance: every termination follows a hire or rehire of the same user.",
		cTenant,
		col("event_date", tDate, false, "When the event took effect. hire: the start date, or the date roster first saw the user when the file gave none; rehire: the new start date when the reactivation set one, else the reactivation date; termination: the deactivation's effective date, never before the start date of the employment it ends; other events: the change's effective date."),
		col("event_type", tString, false, "`hire`, `termination`, `rehire`, `manager_change`, `department_change`, `title_change`, `location_change` or `email_change`."),
		cUserID, cEID,
		col("email", tString, false, "The user's e-mail after the event."),
		cFirst, cLast,
		col("old_value", tString, true, "The value before the event: the manager's employee ID (or e-mail when the manager has none), the department name, the title, the location or the e-mail; for hire, rehire and termination the `active` flag (`true`/`false`, null for a hire). Null when there was none."),
		col("new_value", tString, true, "The value after the event, in the same form as `old_value`."),
		col("department_name", tString, true, "The user's department after the event."),
		col("manager_employee_id", tString, true, "The user's manager after the event (employee ID as of the partition date)."),
		col("title", tString, false, "The user's title after the event."),
		col("location", tString, false, "The user's location after the event."),
		col("change_action", tString, false, "The roster action that recorded the event (`create`, `update`, `deactivate`, `reactivate`, `schedule`)."),
		col("history_id", tInt64, true, "The `user_history` row the event comes from (several events may share one); null for the events of a creation (`hire`, and the `termination` of a user who arrived deactivated)."),
		col("run_id", tInt64, false, "The run that recorded the event."),
		cLoad)

	departmentTable = newTable(TableDepartment, "DepartmentHierarchy",
		"One row per department that existed on the partition date, with its place in the tree and its head as of that date.",
		cTenant,
		col("snapshot_date", tDate, false, "The date the row describes (= `dt`)."),
		col("department_id", tInt64, false, "roster's department ID."),
		col("department_name", tString, false, "Department name (the first spelling roster saw)."),
		col("parent_department_id", tInt64, true, "The parent department's ID; null for a root."),
		col("parent_department_name", tString, true, "The parent department's name; null for a root."),
		col("level", tInt32, false, "Depth in the tree: 1 for a root, 2 for its children, and so on."),
		col("department_path", tString, false, "Names from the root down to this department, joined by ` > `."),
		col("active", tBool, false, "Whether the department is active."),
		col("head_user_id", tInt64, true, "The department head's `user_id`: the most senior active member (see “Department head” above); null when the department has no active member."),
		col("head_employee_id", tString, true, "The head's employee ID."),
		col("head_email", tString, true, "The head's e-mail."),
		col("head_first_name", tString, true, "The head's first name."),
		col("head_last_name", tString, true, "The head's last name."),
		col("active_headcount", tInt64, false, "Active users whose department this is (members of child departments not included)."),
		col("run_id", tInt64, true, "The run that last changed the department on or before the partition date; null for a department roster holds no history for."),
		col("load_timestamp", tTime, false, "When roster recorded the department's last change on or before the partition date (its creation time when it has no history), in UTC."))

	allTables = []*table{snapshotTable, profileTable, eventsTable, departmentTable}
)

func newTable(name, csvName, doc string, cols ...column) *table {
	fields := make([]arrow.Field, len(cols))
	for i, c := range cols {
		fields[i] = arrow.Field{Name: c.name, Type: c.typ, Nullable: c.nullable}
	}
	return &table{name: name, csvName: csvName, doc: doc, cols: cols, schema: arrow.NewSchema(fields, nil)}
}

// typeName is a column's type as the dictionary and the manifest give it.
func typeName(t arrow.DataType) string {
	switch t.ID() {
	case arrow.STRING:
		return "STRING"
	case arrow.DATE32:
		return "DATE"
	case arrow.TIMESTAMP:
		return "TIMESTAMP (UTC, µs)"
	case arrow.INT64:
		return "INT64"
	case arrow.INT32:
		return "INT32"
	case arrow.BOOL:
		return "BOOLEAN"
	}
	return t.String()
}

// dictionaryIntro is the prose of DICTIONARY.md before the tables.
//
//go:embed intro.md
var dictionaryIntro string

// Dictionary renders DICTIONARY.md from the table declarations.
func Dictionary() string {
	var b strings.Builder
	b.WriteString(dictionaryIntro)
	for _, t := range allTables {
		fmt.Fprintf(&b, "## `%s`\n\n%s\n\n| column | type | null | meaning |\n|---|---|---|---|\n", t.name, t.doc)
		for _, c := range t.cols {
			null := "no"
			if c.nullable {
				null = "yes"
			}
			fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", c.name, typeName(c.typ), null, c.doc)
		}
		b.WriteString("\n")
	}
	return b.String()
}
