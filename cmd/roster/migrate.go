package main

import (
	"context"
	"fmt"

	"github.com/roster-hr/roster/stages"
)

// cmdMigrate applies pending migrations (opening the database does) and
// says where the schema stands.
func cmdMigrate(ctx context.Context, a *app, args []string) error {
	db, err := a.open(ctx)
	if err != nil {
		return err
	}
	var last string
	if err := db.GetContext(ctx, &last, `SELECT max(version) FROM schema_migrations`); err != nil {
		return fmt.Errorf("read schema_migrations: %w", err)
	}
	fmt.Fprintf(a.stdout, "database is at migration %s\n", last)
	return nil
}

func cmdStages(ctx context.Context, a *app, args []string) error {
	fmt.Fprint(a.stdout, stages.Registry().Docs())
	return nil
}
