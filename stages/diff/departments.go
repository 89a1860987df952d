package diff

import (
	"fmt"

	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/schemas"
)

// deptRow is one row of a department file.
type deptRow struct {
	pos, src        int
	rejected        bool
	name, key       string
	parentSet       bool
	parentKey       string
	deactSet, deact bool
	existing        int // snapshot index or -1
	action          string
	finParent       string
	finActive       bool
}

type deptDiff struct {
	// dryRun: nothing is applied, so a blocked deactivation is reported at
	// once instead of being judged at the end of the run.
	dryRun bool
	f      *pipeline.File
	depts  *departments
	rows   []deptRow
	byKey  map[string]int // file rows by key
}

func (d *deptDiff) issue(r *deptRow, col, code, msg, value string) {
	d.f.Issues.Add(pipeline.Issue{Row: r.src, Column: col, Code: code, Severity: pipeline.SeverityError, Message: msg, Value: value})
}

func (d *deptDiff) read() {
	idx := map[string]int{}
	for i, c := range d.f.Columns {
		idx[c.Name] = i + 1
	}
	base := 0
	for _, rec := range d.f.Batches {
		rows := rec.Column(0).(*array.Int32)
		name := rec.Column(idx[schemas.ColName]).(*array.String)
		var parent *array.String
		var deact *array.Boolean
		if c, ok := idx[schemas.ColParent]; ok {
			parent = rec.Column(c).(*array.String)
		}
		if c, ok := idx[schemas.ColDeactivate]; ok {
			deact = rec.Column(c).(*array.Boolean)
		}
		for i := 0; i < int(rec.NumRows()); i++ {
			pos := base + i
			r := deptRow{pos: pos, src: int(rows.Value(i)), rejected: d.f.Rejected.Has(pos), name: name.Value(i), existing: -1}
			r.key = schemas.Key(r.name)
			if parent != nil && !d.f.Skipped(schemas.ColParent, pos) {
				r.parentSet, r.parentKey = true, schemas.Key(parent.Value(i))
			}
			if deact != nil && !d.f.Skipped(schemas.ColDeactivate, pos) {
				r.deactSet, r.deact = true, deact.IsValid(i) && deact.Value(i)
			}
			d.rows = append(d.rows, r)
		}
		base += int(rec.NumRows())
	}
}

func (d *deptDiff) decide() {
	d.byKey = map[string]int{}
	for i := range d.rows {
		r := &d.rows[i]
		if r.rejected {
			continue
		}
		d.byKey[r.key] = i
		if j, ok := d.depts.byKey[r.key]; ok {
			r.existing = j
		}
	}
	// Parents must be in the file or exist already.
	for i := range d.rows {
		r := &d.rows[i]
		if r.rejected || !r.parentSet || r.parentKey == "" {
			continue
		}
		_, inFile := d.byKey[r.parentKey]
		_, exists := d.depts.byKey[r.parentKey]
		if !inFile && !exists {
			d.issue(r, schemas.ColParent, schemas.CodeDepartmentParentNotFound,
				fmt.Sprintf("the parent department %q is neither in this file nor already known; add it to the file (the row was applied without the parent)", r.parentKey), r.parentKey)
			r.parentSet = false
		}
	}
	d.rejectCycles()
	// Final state before the deactivation checks.
	for i := range d.rows {
		r := &d.rows[i]
		if r.rejected {
			continue
		}
		r.finParent = d.snapParent(r.existing)
		if r.parentSet {
			r.finParent = r.parentKey
		}
		r.finActive = true
		if r.existing >= 0 {
			r.finActive = d.depts.active[r.existing]
		}
		if r.deactSet {
			r.finActive = !r.deact
		}
	}
	d.checkDeactivations()
	for i := range d.rows {
		r := &d.rows[i]
		if r.rejected {
			continue
		}
		switch {
		case r.existing < 0:
			r.action = schemas.ActCreate
		case d.depts.active[r.existing] && !r.finActive:
			r.action = schemas.ActDeactivate
		case !d.depts.active[r.existing] && r.finActive:
			r.action = schemas.ActReactivate
		case r.finParent != d.snapParent(r.existing):
			r.action = schemas.ActUpdate
		}
	}
}

func (d *deptDiff) snapParent(j int) string {
	if j < 0 || d.depts.parent[j] == 0 {
		return ""
	}
	return d.depts.key[d.depts.byID[d.depts.parent[j]]]
}

// parentOf is the parent key after the file.
func (d *deptDiff) parentOf(key string) string {
	if i, ok := d.byKey[key]; ok && !d.rows[i].rejected && d.rows[i].parentSet {
		return d.rows[i].parentKey
	}
	if j, ok := d.depts.byKey[key]; ok {
		return d.snapParent(j)
	}
	return ""
}

// rejectCycles rejects every department of the file on a loop of parents.
func (d *deptDiff) rejectCycles() {
	for round := 0; round < 16; round++ {
		found := false
		done := map[string]bool{}
		for i := range d.rows {
			r := &d.rows[i]
			if r.rejected || done[r.key] {
				continue
			}
			onPath := map[string]int{}
			var path []string
			k := r.key
			for k != "" && !done[k] {
				if _, seen := onPath[k]; seen {
					break
				}
				onPath[k] = len(path)
				path = append(path, k)
				k = d.parentOf(k)
			}
			if start, seen := onPath[k]; seen && k != "" {
				loop := path[start:]
				desc := ""
				for _, lk := range append(loop, loop[0]) {
					if desc != "" {
						desc += " → "
					}
					desc += lk
				}
				for _, lk := range loop {
					if j, ok := d.byKey[lk]; ok && !d.rows[j].rejected {
						lr := &d.rows[j]
						d.issue(lr, schemas.ColParent, schemas.CodeDepartmentCycle,
							fmt.Sprintf("the parents form a loop (%s); every department on it was rejected", desc), lr.parentKey)
						lr.rejected = true
						d.f.Rejected.Add(lr.pos)
						found = true
					}
				}
			}
			for _, p := range path {
				done[p] = true
			}
		}
		if !found {
			return
		}
		// Rejected rows no longer count as the file's definition.
		for k, i := range d.byKey {
			if d.rows[i].rejected {
				delete(d.byKey, k)
			}
		}
	}
}

// checkDeactivations keeps active every department asked to be deactivated
// that still has active users or active children, and reports it.
func (d *deptDiff) checkDeactivations() {
	activeOf := func(key string) bool {
		if i, ok := d.byKey[key]; ok && !d.rows[i].rejected {
			return d.rows[i].finActive
		}
		if j, ok := d.depts.byKey[key]; ok {
			return d.depts.active[j]
		}
		return false
	}
	for changed := true; changed; {
		changed = false
		for i := range d.rows {
			r := &d.rows[i]
			if r.rejected || r.finActive || r.existing < 0 || !d.depts.active[r.existing] {
				continue
			}
			blocked := ""
			if n := d.depts.activeUsers[d.depts.id[r.existing]]; n > 0 {
				blocked = schemas.HasActiveUsersMessage(r.name, n)
				if d.dryRun {
					d.issue(r, schemas.ColDeactivate, schemas.CodeDepartmentHasActiveUsers, blocked, r.name)
				}
			} else {
				for _, k := range d.allKeys() {
					if d.parentOf(k) == r.key && activeOf(k) {
						blocked = schemas.HasActiveChildrenMessage(r.name, k)
						if d.dryRun {
							d.issue(r, schemas.ColDeactivate, schemas.CodeDepartmentHasActiveChildren, blocked, r.name)
						}
						break
					}
				}
			}
			if blocked != "" {
				// Kept active by this file; the run's end decides (users may
				// move out in a later file of the same run).
				r.finActive, changed = true, true
				if !d.dryRun {
					d.f.Pending = append(d.f.Pending, pipeline.PendingDeactivation{Row: r.src, Key: r.key, Name: r.name})
				}
			}
		}
	}
}

// allKeys lists the departments after the file: known ones and the file's.
func (d *deptDiff) allKeys() []string {
	keys := append([]string(nil), d.depts.key...)
	for k := range d.byKey {
		if _, known := d.depts.byKey[k]; !known {
			keys = append(keys, k)
		}
	}
	return keys
}

func (d *deptDiff) counts() pipeline.Counts {
	c := pipeline.Counts{Rows: d.f.Rows}
	for _, r := range d.rows {
		if r.rejected {
			continue
		}
		c.Count(r.action)
	}
	return c
}
