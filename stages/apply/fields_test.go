package apply

import (
	"testing"

	"github.com/roster-hr/roster/pipeline/pgtest"
)

// TestHistoryFieldsMatchTheSchema: the fields apply records changes of are
// the fields the schema's roster_user_fields knows, from which the export
// and user_field_history derive a user's values at creation. A field added
// to one and not the other would be lost from history's replay.
func TestHistoryFieldsMatchTheSchema(t *testing.T) {
	db, _ := pgtest.New(t)
	var ours []string
	for _, h := range historyFields {
		ours = append(ours, h.name)
	}
	pgtest.CheckHistoryFields(t, db, "apply's history fields", ours)
}
