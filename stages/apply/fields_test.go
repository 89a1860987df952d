package apply

import (
	"slices"
	"testing"

	"github.com/roster-hr/roster/pipeline/pgtest"
)

// TestHistoryFieldsMatchTheSchema: the fields apply records changes of are
// the fields the schema's roster_user_fields knows, from which the export
// and user_field_history derive a user's values at creation. A field added
// to one and not the other would be lost from history's replay.
func TestHistoryFieldsMatchTheSchema(t *testing.T) {
	db, _ := pgtest.New(t)
	schema := pgtest.HistoryFields(t, db)
	var ours []string
	for _, h := range historyFields {
		ours = append(ours, h.name)
	}
	slices.Sort(ours)
	if !slices.Equal(ours, schema) {
		t.Fatalf("apply records %v, roster_user_fields has %v", ours, schema)
	}
}
