package schemas

import "github.com/apache/arrow/go/v17/arrow"

// User actions of a plan, as diff decides them and apply carries them out.
const (
	ActCreate     = "create"
	ActUpdate     = "update"
	ActDeactivate = "deactivate"
	ActReactivate = "reactivate"
	ActSchedule   = "schedule"
)

// PlanUsers is the Arrow schema of diff's user actions: the full final state
// of every user the file changes. manager_row names a user created by the
// same file (by source row), whose id apply assigns. row_digest is what
// apply stores as the user's row digest (see RowDigestLen): null clears it.
func PlanUsers() *arrow.Schema {
	s := arrow.BinaryTypes.String
	return arrow.NewSchema([]arrow.Field{
		{Name: "row", Type: arrow.PrimitiveTypes.Int32},
		{Name: "action", Type: s},
		{Name: "user_id", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
		{Name: "employee_id", Type: s, Nullable: true},
		{Name: "email", Type: s},
		{Name: "first_name", Type: s},
		{Name: "last_name", Type: s},
		{Name: "manager_user_id", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
		{Name: "manager_row", Type: arrow.PrimitiveTypes.Int32, Nullable: true},
		{Name: "department_key", Type: s, Nullable: true},
		{Name: "title", Type: s},
		{Name: "location", Type: s},
		{Name: "start_date", Type: arrow.FixedWidthTypes.Date32, Nullable: true},
		{Name: "deactivation_date", Type: arrow.FixedWidthTypes.Date32, Nullable: true},
		{Name: "custom", Type: s},
		{Name: "active", Type: arrow.FixedWidthTypes.Boolean},
		{Name: "effective_date", Type: arrow.FixedWidthTypes.Date32},
		{Name: "row_digest", Type: &arrow.FixedSizeBinaryType{ByteWidth: RowDigestLen}, Nullable: true},
	}, nil)
}

// RowDigestLen is the length in bytes of a user's row digest: a digest of
// the file row that last set the user's state (migration 0007), which
// lets diff pass over a row that says again what the user already is.
const RowDigestLen = 16

// PlanDigests is the Arrow schema of the row digests diff asks apply to
// store for users the file leaves as they are (null: clear it).
func PlanDigests() *arrow.Schema {
	return arrow.NewSchema([]arrow.Field{
		{Name: "user_id", Type: arrow.PrimitiveTypes.Int64},
		{Name: "row_digest", Type: &arrow.FixedSizeBinaryType{ByteWidth: RowDigestLen}, Nullable: true},
	}, nil)
}

// PlanDepartments is the Arrow schema of diff's department actions.
// set_parent false leaves the parent as it is.
func PlanDepartments() *arrow.Schema {
	s := arrow.BinaryTypes.String
	return arrow.NewSchema([]arrow.Field{
		{Name: "row", Type: arrow.PrimitiveTypes.Int32},
		{Name: "action", Type: s},
		{Name: "department_id", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
		{Name: "name", Type: s},
		{Name: "name_key", Type: s},
		{Name: "parent_key", Type: s, Nullable: true},
		{Name: "set_parent", Type: arrow.FixedWidthTypes.Boolean},
		{Name: "active", Type: arrow.FixedWidthTypes.Boolean},
	}, nil)
}
