package diff

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/schemas"
)

// userDiff decides every user row of one file against the snapshot.
type userDiff struct {
	run   *pipeline.Run
	f     *pipeline.File
	snap  *users
	depts *departments
	rows  []inRow
	cols  []batchRows // per batch, the text column of each field and the custom cells
	today int32
	// claimed[snapshot index] is the row that targets that user, or -1.
	// A slice, not a map: it is read for every user of the snapshot.
	claimed []int32
	// omitted are active users a full-file tenant deactivates.
	omitted []int
	// new departments (by key → first spelling) and reactivated ones.
	newDepts   map[string]string
	deptOrder  []string
	reactDepts map[string]bool
	required   []requiredField
	// The incremental diff (digest.go): what was read instead of every
	// user's state, each row's digest (by position), and the users of fast
	// rows that revertLoop reported, and the fast rows that stay fast
	// only while their manager's row does.
	stored      *stored
	dig         []digest
	flaggedFast []int64
	waiting     []waitingRow
}

func (d *userDiff) issue(r *inRow, col, code, msg, value string, sev pipeline.Severity) {
	r.flagged = true
	d.f.Issues.Add(pipeline.Issue{Row: int(r.src), Column: col, Code: code, Severity: sev, Message: msg, Value: value})
}

func (d *userDiff) reject(r *inRow, col, code, msg, value string) {
	d.issue(r, col, code, msg, value, pipeline.SeverityError)
	r.rejected = true
	d.f.Rejected.Add(int(r.pos))
}

func (d *userDiff) run_() error {
	d.identify()
	// Every row is decided on every core: decide only reads the snapshot
	// and writes its own row. A new user without a required field is
	// rejected, which reports an issue: those are gathered and rejected
	// afterwards, in row order (a first load decided its million new users
	// on one core).
	type missing struct {
		r   *inRow
		col schemas.Column
	}
	var mu sync.Mutex
	var found []missing
	pipeline.Parallel(len(d.rows), 1<<14, func(lo, hi int) {
		keys := deptKeys{}
		var mine []missing
		for i := lo; i < hi; i++ {
			if r := &d.rows[i]; r.open() {
				if rf := d.decide(r, keys); rf != nil {
					mine = append(mine, missing{r, rf.col})
				}
			}
		}
		if len(mine) > 0 {
			mu.Lock()
			found = append(found, mine...)
			mu.Unlock()
		}
	})
	slices.SortFunc(found, func(a, b missing) int { return int(a.r.pos - b.r.pos) })
	for _, m := range found {
		c := m.col
		d.reject(m.r, c.Name, c.RequiredCode, fmt.Sprintf("%s is required for a new user; the row has no %s, so it was not applied", c.Name, c.Name), "")
	}
	d.checkEmails()
	d.omit()
	if err := d.guardMassDeactivation(); err != nil {
		return err
	}
	d.checkSeats()
	d.resolveManagers()
	d.resolveDepartments()
	pipeline.Parallel(len(d.rows), 1<<14, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			if r := &d.rows[i]; r.open() {
				d.classify(r)
			}
		}
	})
	return nil
}

// identify finds the user each row is about: by employee_id when the row
// has one, otherwise by e-mail; an unknown id whose e-mail belongs to a user
// without an id takes that user and gives it the id.
func (d *userDiff) identify() {
	d.claimed = make([]int32, d.snap.len())
	for j := range d.claimed {
		d.claimed[j] = -1
	}
	// The lookups (a million map probes that miss the cache) on every
	// core; the claims, which depend on row order, in one pass after.
	cand := make([]int32, len(d.rows))
	pipeline.Parallel(len(d.rows), 1<<14, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			cand[i] = -1
			if !d.rows[i].fast {
				cand[i] = int32(d.lookup(&d.rows[i]))
			}
		}
	})
	for i := range d.rows {
		r := &d.rows[i]
		t := int(cand[i])
		if t < 0 {
			continue
		}
		if other := d.claimed[t]; other >= 0 {
			o := &d.rows[other]
			msg := fmt.Sprintf("rows %d and %d both refer to the user %s; roster cannot know which one is right, so neither was applied", o.src, r.src, d.snap.st[t].email)
			// Each row is reported once: rows that validate already
			// rejected (typically as duplicate_employee_id or
			// duplicate_email, which is how two rows usually reach the same
			// user) are not reported a second time for the same clash.
			if !o.rejected {
				d.reject(o, schemas.ColEmail, schemas.CodeDuplicateEmail, msg, d.val(o, fEmail))
			}
			if !r.rejected {
				d.reject(r, schemas.ColEmail, schemas.CodeDuplicateEmail, msg, d.val(r, fEmail))
			}
			continue
		}
		d.claimed[t] = int32(i)
		r.target = int32(t)
	}
}

// lookup finds the snapshot user row r is about, or -1.
func (d *userDiff) lookup(r *inRow) int {
	eid, email := d.val(r, fEID), d.val(r, fEmail)
	if eid != "" {
		if j, ok := d.snap.byEID[eid]; ok {
			return j
		}
		if j, ok := d.snap.byEmail[email]; ok && !d.snap.st[j].hasEID {
			return j
		}
		if j, ok := d.snap.byEmailInact[email]; ok && !d.snap.st[j].hasEID {
			return j
		}
	} else if email != "" {
		if j, ok := d.snap.byEmail[email]; ok {
			return j
		}
		if j, ok := d.snap.byEmailInact[email]; ok {
			return j
		}
	}
	return -1
}

// deptKeys remembers schemas.Key of the department names seen, one per
// goroutine: a file names a few dozen departments a million times, and a
// new lower-cased string per row was 1M allocations and ~0.1 s of decide.
// It stops growing at deptKeysMax names, so a file of distinct names costs
// what it did.
type deptKeys map[string]string

const deptKeysMax = 4096

func (k deptKeys) of(name string) string {
	if key, ok := k[name]; ok {
		return key
	}
	key := schemas.Key(name)
	if len(k) < deptKeysMax {
		k[name] = key
	}
	return key
}

// decide computes a row's final state and action from the snapshot. For a
// new user without a required field it decides nothing and returns that
// field, for the caller to reject the row.
func (d *userDiff) decide(r *inRow, keys deptKeys) *requiredField {
	var old state
	if r.target >= 0 {
		old = d.snap.state(int(r.target))
	} else {
		// A new user needs every required field. A JSON object may leave
		// a key out (an absent column: the field is left as it is), which
		// validate cannot refuse without the snapshot; a user who does not
		// exist yet has nothing to leave, so the row is rejected as if the
		// cell were empty (without this, users were created with an empty
		// e-mail, and a second one failed the apply).
		for k := range d.required {
			if !r.sets(d.required[k].field) {
				return &d.required[k]
			}
		}
		old = state{mgrRow: -1, custom: "{}"}
	}
	fin := old
	if r.sets(fEID) && d.val(r, fEID) != "" {
		// An empty id cell never clears an id: the id is the identity.
		fin.eid, fin.hasEID = d.val(r, fEID), true
	}
	if r.sets(fEmail) {
		fin.email = d.val(r, fEmail)
	}
	if r.sets(fFirst) {
		fin.first = d.val(r, fFirst)
	}
	if r.sets(fLast) {
		fin.last = d.val(r, fLast)
	}
	if r.sets(fTitle) {
		fin.title = d.val(r, fTitle)
	}
	if r.sets(fLoc) {
		fin.loc = d.val(r, fLoc)
	}
	if r.sets(fDept) {
		fin.deptKey = keys.of(d.val(r, fDept))
	}
	if r.sets(fStart) {
		fin.start, fin.hasStart = r.start, r.startOK
	}
	if r.sets(fDeact) {
		fin.deact, fin.hasDeact = r.deact, r.deactOK
	}
	if r.custN > 0 {
		fin.custom = mergeCustom(old.custom, d.custom(r))
	}
	past := fin.hasDeact && fin.deact <= d.today
	switch {
	case r.target < 0:
		r.action = actCreate
		fin.active = !past
	case old.active && past:
		r.action = actDeactivate
		fin.active = false
	case old.active && fin.hasDeact && (!old.hasDeact || old.deact != fin.deact):
		r.action = actSchedule
	case old.active:
		r.action = actUpdate
	case !past:
		r.action = actReactivate
		fin.active = true
	default:
		r.action = actUpdate // stays inactive
	}
	r.fin = fin
	r.same = r.target >= 0 && sameState(old, fin)
	return nil
}

// requiredField is a required template column and its row field.
type requiredField struct {
	col   schemas.Column
	field int
}

// requiredFields lists the user template's required columns, worked out
// once per file rather than per new row.
func requiredFields() []requiredField {
	var req []requiredField
	for _, c := range schemas.Users().Columns {
		if fi := slices.Index(fieldCol[:], c.Name); c.Required && fi >= 0 {
			req = append(req, requiredField{c, fi})
		}
	}
	return req
}

// mergeCustom applies a row's custom cells to the stored JSON object: a
// value sets its key, an empty cell removes it.
func mergeCustom(old string, cells []kv) string {
	m := map[string]string{}
	_ = json.Unmarshal([]byte(old), &m)
	for _, c := range cells {
		if c.v == "" {
			delete(m, c.k)
		} else {
			m[c.k] = c.v
		}
	}
	b, _ := json.Marshal(m) // keys sorted: equal maps give equal text
	return string(b)
}

// checkEmails rejects rows that would give an active user an e-mail that
// another active user keeps, judged on the state after the whole file (two
// users may swap e-mails in one file). Rejecting a row keeps its user's old
// e-mail, which may in turn collide: repeat until nothing changes.
func (d *userDiff) checkEmails() {
	// The holder of an e-mail is the active user who has it in the
	// snapshot (active e-mails are unique there), unless an accepted row
	// of the file is about that user: then the row says whether the user
	// keeps it (a JSON row may leave the e-mail out and keep it while
	// another row asks for it).
	holder := func(email string) (int, bool) {
		j, ok := d.snap.byEmail[email]
		if !ok {
			return 0, false
		}
		if ri := d.claimed[j]; ri >= 0 && !d.rows[ri].rejected {
			if r := &d.rows[ri]; !r.fin.active || r.fin.email != email {
				return 0, false
			}
		}
		return j, true
	}
	// Almost always no row clashes: one look on every core says so, and
	// only a file with a clash takes the passes below, in row order (a
	// rejection can hand an e-mail back to its holder and reject more).
	var clash atomic.Bool
	pipeline.Parallel(len(d.rows), 1<<14, func(lo, hi int) {
		for i := lo; i < hi && !clash.Load(); i++ {
			r := &d.rows[i]
			if !r.open() || !r.fin.active {
				continue
			}
			if j, ok := holder(r.fin.email); ok && j != int(r.target) {
				clash.Store(true)
			}
		}
	})
	for changed := clash.Load(); changed; {
		changed = false
		for i := range d.rows {
			r := &d.rows[i]
			if !r.open() || !r.fin.active {
				continue
			}
			if j, ok := holder(r.fin.email); ok && j != int(r.target) {
				d.reject(r, schemas.ColEmail, schemas.CodeEmailInUse,
					fmt.Sprintf("%s already belongs to another active user (%s) who keeps it; change one of the two e-mails, or deactivate the other user first", r.fin.email, d.describe(j)),
					r.fin.email)
				changed = true
			}
		}
	}
}

func (d *userDiff) describe(j int) string {
	name := strings.TrimSpace(d.snap.st[j].first + " " + d.snap.st[j].last)
	if d.snap.st[j].hasEID {
		return fmt.Sprintf("%s, employee_id %s", name, d.snap.st[j].eid)
	}
	return name
}

// omit deactivates, for a tenant with full-file semantics, every active user
// the file does not mention.
func (d *userDiff) omit() {
	if d.run.Tenant.Omitted != "deactivate" {
		return
	}
	for j := 0; j < d.snap.len(); j++ {
		if d.claimed[j] >= 0 || !d.snap.st[j].active || d.fastUser(j) >= 0 {
			continue
		}
		d.omitted = append(d.omitted, j)
	}
}

func (d *userDiff) deactivations() int {
	n := len(d.omitted)
	for i := range d.rows {
		r := &d.rows[i]
		if !r.rejected && r.target >= 0 && d.snap.st[r.target].active && !r.fin.active {
			n++
		}
	}
	return n
}

func (d *userDiff) activeBefore() int { return d.snap.active }

// guardMassDeactivation rejects a file that would deactivate more than the
// tenant's threshold of its active users, and more than 10 of them.
func (d *userDiff) guardMassDeactivation() error {
	if d.run.AllowMassDeactivation {
		return nil
	}
	n, active := d.deactivations(), d.activeBefore()
	limit := d.run.Tenant.MassDeactivationPct / 100 * float64(active)
	if n > 10 && float64(n) > limit {
		return pipeline.Reject(schemas.CodeMassDeactivationGuard,
			"this file would deactivate %d of your %d active users (%.0f%%), more than the %.0f%% safety limit; nothing was applied. If this is intended, ask your roster operator to apply it with --allow-mass-deactivation; if users are missing from the export, export the full list again",
			n, active, 100*float64(n)/math.Max(1, float64(active)), d.run.Tenant.MassDeactivationPct)
	}
	return nil
}

// checkSeats refuses every create and reactivation of the file when they
// exceed the free seats; updates and deactivations still apply.
func (d *userDiff) checkSeats() {
	seats, limited := d.run.Tenant.SeatLimit()
	if !limited {
		return
	}
	var adding []*inRow
	for i := range d.rows {
		r := &d.rows[i]
		if !r.open() || !r.fin.active {
			continue
		}
		if r.target < 0 || !d.snap.st[r.target].active {
			adding = append(adding, r)
		}
	}
	free := seats - (d.activeBefore() - d.deactivations())
	if len(adding) <= free {
		return
	}
	if free < 0 {
		free = 0
	}
	for _, r := range adding {
		d.reject(r, schemas.ColEmail, schemas.CodeLicenseLimitExceeded,
			fmt.Sprintf("this file adds %d active users but only %d of your %d seats are free; no user of this file was created or reactivated. Deactivate users or buy more seats, then send the file again", len(adding), free, seats),
			r.fin.email)
	}
}

// resolveDepartments finds the departments user rows name: an unknown one
// is created (no parent), a deactivated one is reactivated with a warning.
func (d *userDiff) resolveDepartments() {
	d.newDepts, d.reactDepts = map[string]string{}, map[string]bool{}
	for i := range d.rows {
		r := &d.rows[i]
		if !r.open() || !r.sets(fDept) || r.fin.deptKey == "" {
			continue
		}
		key := r.fin.deptKey
		if j, ok := d.depts.byKey[key]; ok {
			if !d.depts.active[j] && !d.reactDepts[key] {
				d.reactDepts[key] = true
				d.issue(r, schemas.ColDepartment, schemas.CodeDepartmentReactivated,
					fmt.Sprintf("department %q was deactivated and has been reactivated because this user belongs to it", d.depts.name[j]),
					d.val(r, fDept), pipeline.SeverityWarning)
			}
			continue
		}
		if _, ok := d.newDepts[key]; !ok {
			d.newDepts[key] = d.val(r, fDept)
			d.deptOrder = append(d.deptOrder, key)
		}
	}
}

// classify turns a decided row into its counted action, or unchanged.
// Only the manager can have changed since decide compared the rest (it is
// resolved after): reading the user's whole state from the snapshot again
// here, sixteen columns in sixteen places for each of a million rows, was
// 0.3 s of an unchanged file.
func (d *userDiff) classify(r *inRow) {
	if r.target < 0 {
		return
	}
	if r.action == actUpdate && r.same && r.fin.mgrRow < 0 && r.fin.mgr == d.snap.st[r.target].mgr {
		r.action = actNone
	}
}

func sameState(a, b state) bool {
	return a.eid == b.eid && a.hasEID == b.hasEID && a.email == b.email && a.first == b.first && a.last == b.last &&
		a.mgr == b.mgr && a.mgrRow == b.mgrRow && a.deptKey == b.deptKey && a.title == b.title && a.loc == b.loc &&
		a.hasStart == b.hasStart && (!a.hasStart || a.start == b.start) &&
		a.hasDeact == b.hasDeact && (!a.hasDeact || a.deact == b.deact) &&
		a.custom == b.custom && a.active == b.active
}

// counts tallies the file's actions, each accepted row once.
func (d *userDiff) counts() pipeline.Counts {
	c := pipeline.Counts{Rows: d.f.Rows}
	for i := range d.rows {
		r := &d.rows[i]
		if r.rejected {
			continue
		}
		c.Count(r.action.String())
	}
	c.Deactivated += len(d.omitted)
	return c
}

// sortedKeys is for deterministic output.
func sortedKeys(m map[string]bool) []string {
	var k []string
	for s := range m {
		k = append(k, s)
	}
	sort.Strings(k)
	return k
}
