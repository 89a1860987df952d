package stages_test

import (
	"context"
	"testing"

	"github.com/jmoiron/sqlx"
	"github.com/roster-hr/roster/pipeline"
)

// putTenant stores tenant id for a test with the analytics export off (it
// has its own tests and would multiply the others' time); edit, when not
// nil, changes the tenant before it is stored.
func putTenant(t *testing.T, db *sqlx.DB, id string, edit func(*pipeline.Tenant)) *pipeline.Tenant {
	t.Helper()
	tn := pipeline.NewTenant(id)
	tn.ExportEnabled = false
	if edit != nil {
		edit(tn)
	}
	if err := (pipeline.Tenants{DB: db}).Put(context.Background(), tn); err != nil {
		t.Fatal(err)
	}
	return tn
}
