package main

import (
	"context"
	"fmt"

	"github.com/roster-hr/roster/schemas"
	"github.com/roster-hr/roster/stages"
)

func cmdMigrate(ctx context.Context, a *app, args []string) error {
	if a.dbURL == "" {
		return usagef("no database: set DATABASE_URL or --db")
	}
	db, err := a.open(ctx) // open applies them
	if err != nil {
		return err
	}
	var n int
	if err := db.GetContext(ctx, &n, `SELECT count(*) FROM schema_migrations`); err != nil {
		return err
	}
	_, err = schemas.Migrate(ctx, db)
	fmt.Fprintf(a.stdout, "database is at migration %d\n", n)
	return err
}

func cmdStages(ctx context.Context, a *app, args []string) error {
	fmt.Fprint(a.stdout, stages.Registry().Docs())
	return nil
}
