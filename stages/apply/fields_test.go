package apply

import (
	"context"
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
	var schema []string
	if err := db.SelectContext(context.Background(), &schema,
		`SELECT k FROM jsonb_object_keys(roster_user_fields(NULL::users, NULL)) k ORDER BY k`); err != nil {
		t.Fatal(err)
	}
	var ours []string
	for _, h := range historyFields {
		ours = append(ours, h.name)
	}
	slices.Sort(ours)
	if !slices.Equal(ours, schema) {
		t.Fatalf("apply records %v, roster_user_fields has %v", ours, schema)
	}
}
