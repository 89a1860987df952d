package apply

import (
	"context"
	"fmt"

	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/schemas"
)

// FinishRun settles the department deactivations the run's department
// files asked for but that still had active users or sub-departments when
// their file applied: FILE_RULES.md judges them on the state at the end of
// the run, so a run may move users out in its user file and deactivate the
// department in its department file. Those now free are deactivated (in one
// transaction, children before parents); the others stay active and their
// rows are reported, the file counting as applied with errors.
func (stage) FinishRun(ctx context.Context, run *pipeline.Run, files []*pipeline.File) error {
	if run.DryRun {
		return nil
	}
	type pending struct {
		f *pipeline.File
		p pipeline.PendingDeactivation
	}
	var todo []pending
	for _, f := range files {
		if f.Status != pipeline.StatusApplied {
			continue
		}
		for _, p := range f.Pending {
			todo = append(todo, pending{f, p})
		}
	}
	if len(todo) == 0 {
		return nil
	}
	tx, err := run.DB.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("settle departments: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit it is a no-op
	done := make([]bool, len(todo))
	for progress := true; progress; {
		progress = false
		for i, t := range todo {
			if done[i] {
				continue
			}
			var users, children int
			if err := tx.QueryRowxContext(ctx, `SELECT
				(SELECT count(*) FROM users u WHERE u.tenant_id = d.tenant_id AND u.department_id = d.id AND u.active),
				(SELECT count(*) FROM departments c WHERE c.parent_id = d.id AND c.active)
				FROM departments d WHERE d.tenant_id = $1 AND d.name_key = $2`, run.Tenant.ID, t.p.Key).Scan(&users, &children); err != nil {
				return fmt.Errorf("settle departments: %w", err)
			}
			if users > 0 || children > 0 {
				continue
			}
			if _, err := tx.ExecContext(ctx, `WITH d AS (UPDATE departments SET active = false, updated_at = now()
					WHERE tenant_id = $1 AND name_key = $2 AND active RETURNING id)
				INSERT INTO department_history (tenant_id, run_id, department_id, action, effective_date, changes)
				SELECT $1, $3, d.id, 'deactivate', $4, '{"active": {"old": true, "new": false}}' FROM d`,
				run.Tenant.ID, t.p.Key, run.ID, run.LogicalDate); err != nil {
				return fmt.Errorf("settle departments: %w", err)
			}
			t.f.Counts.Unchanged--
			t.f.Counts.Deactivated++
			done[i], progress = true, true
		}
	}
	added := map[*pipeline.File][]pipeline.Issue{}
	for i, t := range todo {
		if done[i] {
			continue
		}
		var users int
		var child string
		if err := tx.QueryRowxContext(ctx, `SELECT
			(SELECT count(*) FROM users u WHERE u.tenant_id = d.tenant_id AND u.department_id = d.id AND u.active),
			coalesce((SELECT min(c.name) FROM departments c WHERE c.parent_id = d.id AND c.active), '')
			FROM departments d WHERE d.tenant_id = $1 AND d.name_key = $2`, run.Tenant.ID, t.p.Key).Scan(&users, &child); err != nil {
			return fmt.Errorf("settle departments: %w", err)
		}
		is := pipeline.Issue{Row: t.p.Row, Column: schemas.ColDeactivate, Severity: pipeline.SeverityError, Value: t.p.Name}
		if users > 0 {
			is.Code, is.Message = schemas.CodeDepartmentHasActiveUsers, schemas.HasActiveUsersMessage(t.p.Name, users)
		} else {
			is.Code, is.Message = schemas.CodeDepartmentHasActiveChildren, schemas.HasActiveChildrenMessage(t.p.Name, child)
		}
		t.f.Issues.Add(is)
		added[t.f] = append(added[t.f], is)
	}
	for _, f := range files {
		if len(f.Pending) == 0 || f.Status != pipeline.StatusApplied {
			continue
		}
		if err := run.Ledger.AddIssues(ctx, tx, run.ID, f, added[f]); err != nil {
			return err
		}
	}
	return tx.Commit()
}
