package diff

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/schemas"
)

// resolveManagers resolves each row's manager_id or manager_email to an
// accepted row of the file or a user active before the run, and refuses
// self-references, unknown managers and cycles. The manager is optional, so
// such a row still applies, keeping its previous manager.
func (d *userDiff) resolveManagers() {
	// An accepted row of the file by e-mail or id. A row about a user of
	// the snapshot who keeps that e-mail (active) or id is found through the
	// snapshot's indexes; the other rows (new users, changed e-mails or
	// ids) go into maps, and of those only the ones some row names as its
	// manager: a first load of a million rows names ~125k managers, and a
	// map of every row was 1M inserts on one core (~0.18 s).
	var mu sync.Mutex
	// The rows that may go into a map, per range of rows.
	type cands struct {
		lo                 int
		mail, byID         []int32
		namedMail, namedID int // rows that name a manager by e-mail, by id
	}
	var parts []cands
	pipeline.Parallel(len(d.rows), 1<<14, func(lo, hi int) {
		// At their largest (a first load: every row) from the start: grown
		// by appends, the lists allocated ~40 MB on a 1M-row first load.
		p := cands{lo: lo, mail: make([]int32, 0, hi-lo), byID: make([]int32, 0, hi-lo)}
		for i := lo; i < hi; i++ {
			r := &d.rows[i]
			if !r.open() {
				continue
			}
			if d.val(r, fMgrEmail) != "" {
				p.namedMail++
			}
			if d.val(r, fMgrID) != "" {
				p.namedID++
			}
			t := r.target
			if t < 0 || !d.snap.st[t].active || d.snap.st[t].email != r.fin.email {
				p.mail = append(p.mail, int32(i))
			}
			if r.fin.hasEID && (t < 0 || !d.snap.st[t].hasEID || d.snap.st[t].eid != r.fin.eid) {
				p.byID = append(p.byID, int32(i))
			}
		}
		mu.Lock()
		parts = append(parts, p)
		mu.Unlock()
	})
	slices.SortFunc(parts, func(a, b cands) int { return a.lo - b.lo })
	candMail, candID, namedMail, namedID := 0, 0, 0, 0
	for _, p := range parts {
		candMail, candID = candMail+len(p.mail), candID+len(p.byID)
		namedMail, namedID = namedMail+p.namedMail, namedID+p.namedID
	}
	// Gathering the names costs a lookup per naming row, and pays when
	// the candidates are many: a first load, not the unchanged file whose
	// 2% of inactive users are candidates (there it cost ~0.25 s).
	// Otherwise every candidate of a kind some row names goes in; a kind
	// nobody names gets no map (the usual template has no manager_id).
	mailAsked, idAsked := askedKeys{all: namedMail > 0}, askedKeys{all: namedID > 0}
	if candMail+candID > (namedMail+namedID)/2 {
		m, e := d.managerRefs()
		mailAsked, idAsked = askedKeys{keys: m}, askedKeys{keys: e}
	}
	// Sized before they fill (a million-entry map grown as it fills is
	// rehashed twenty times).
	otherEmail, otherEID := make(map[string]int, mailAsked.most(candMail)), make(map[string]int, idAsked.most(candID))
	pipeline.Each(func() { // the two maps, one per core; in row order, the last row wins
		for _, p := range parts {
			for _, i := range p.mail {
				if mailAsked.has(d.rows[i].fin.email) {
					otherEmail[d.rows[i].fin.email] = int(i)
				}
			}
		}
	}, func() {
		for _, p := range parts {
			for _, i := range p.byID {
				if idAsked.has(d.rows[i].fin.eid) {
					otherEID[d.rows[i].fin.eid] = int(i)
				}
			}
		}
	})
	claimant := func(idx map[string]int, key string) int {
		s, ok := idx[key]
		if !ok {
			return -1
		}
		if ri := d.claimed[s]; ri >= 0 && !d.rows[ri].rejected {
			return int(ri)
		}
		return -1
	}
	byEmail := func(ref string) (int, bool) {
		if i, ok := otherEmail[ref]; ok {
			return i, true
		}
		if i := claimant(d.snap.byEmail, ref); i >= 0 && d.rows[i].fin.email == ref {
			return i, true
		}
		return -1, false
	}
	byEID := func(ref string) (int, bool) {
		if i, ok := otherEID[ref]; ok {
			return i, true
		}
		if i := claimant(d.snap.byEID, ref); i >= 0 && d.rows[i].fin.hasEID && d.rows[i].fin.eid == ref {
			return i, true
		}
		return -1, false
	}
	// Rows are resolved on every core: each writes only its own manager
	// fields and reads the indexes; the issues (at most one per row) are
	// gathered and reported afterwards in row order.
	type pending struct {
		r                     *inRow
		col, code, msg, value string
	}
	var found []pending
	var anyChange atomic.Bool
	pipeline.Parallel(len(d.rows), 1<<14, func(lo, hi int) {
		var issues []pending
		changed := false
		for i := lo; i < hi; i++ {
			r := &d.rows[i]
			if !r.open() {
				continue
			}
			col, ref := managerRef(d, r)
			if col == "" {
				continue // the row leaves the manager as it is
			}
			if ref == "" {
				// Empty manager cells: the manager is removed.
				r.fin.mgr, r.fin.mgrRow, r.mgrSet = 0, -1, true
				changed = changed || d.edgeChanged(r)
				continue
			}
			if (col == schemas.ColManagerID && r.fin.hasEID && ref == r.fin.eid) || (col == schemas.ColManagerEmail && (ref == r.fin.email || ref == d.val(r, fEmail))) {
				issues = append(issues, pending{r, col, schemas.CodeSelfManager, "a user cannot be their own manager; the row was applied without the manager change", ref})
				continue
			}
			j, inFile := -1, false
			if col == schemas.ColManagerID {
				j, inFile = byEID(ref)
			} else {
				j, inFile = byEmail(ref)
			}
			switch {
			case inFile && d.rows[j].target >= 0:
				r.fin.mgr, r.fin.mgrRow = d.snap.id[d.rows[j].target], -1
			case inFile:
				r.fin.mgr, r.fin.mgrRow = 0, int32(j)
			default:
				s, ok := -1, false
				if col == schemas.ColManagerID {
					s, ok = d.snap.byEID[ref]
					ok = ok && d.snap.st[s].active
				} else {
					s, ok = d.snap.byEmail[ref]
				}
				if !ok {
					issues = append(issues, pending{r, col, schemas.CodeManagerNotFound,
						fmt.Sprintf("no active user or row of this file has %s %q; the row was applied without the manager change", col, ref), ref})
					continue
				}
				r.fin.mgr, r.fin.mgrRow = d.snap.id[s], -1
			}
			r.mgrSet = true
			changed = changed || d.edgeChanged(r)
		}
		mu.Lock()
		found = append(found, issues...)
		mu.Unlock()
		if changed {
			anyChange.Store(true)
		}
	})
	slices.SortFunc(found, func(a, b pending) int { return int(a.r.pos - b.r.pos) })
	for _, p := range found {
		d.issue(p.r, p.col, p.code, p.msg, p.value, pipeline.SeverityError)
	}
	// Only a changed edge can close a loop: roster never stores one (every
	// apply breaks them), so a file that keeps every manager (the nightly
	// file of a large tenant, mostly) skips the walk of the whole tree.
	if anyChange.Load() {
		d.breakCycles()
	}
}

// askedKeys is what rows may look a manager up by, of one kind (e-mail or
// id): the names they give, or every key (all) when the names were not
// gathered; neither when no row names a manager that way.
type askedKeys struct {
	keys map[string]struct{}
	all  bool
}

func (a askedKeys) has(key string) bool {
	if a.all {
		return true
	}
	_, ok := a.keys[key]
	return ok
}

// most is how many of cand candidates can be asked for.
func (a askedKeys) most(cand int) int {
	if a.all {
		return cand
	}
	return min(cand, len(a.keys))
}

// managerRefs returns the distinct manager e-mails and ids the accepted
// rows name, gathered on every core.
func (d *userDiff) managerRefs() (mail, id map[string]struct{}) {
	var mu sync.Mutex
	mail, id = map[string]struct{}{}, map[string]struct{}{}
	pipeline.Parallel(len(d.rows), 1<<14, func(lo, hi int) {
		m, e := map[string]struct{}{}, map[string]struct{}{}
		for i := lo; i < hi; i++ {
			r := &d.rows[i]
			if !r.open() {
				continue
			}
			if v := d.val(r, fMgrEmail); v != "" {
				m[v] = struct{}{}
			}
			if v := d.val(r, fMgrID); v != "" {
				e[v] = struct{}{}
			}
		}
		mu.Lock()
		defer mu.Unlock()
		for k := range m {
			mail[k] = struct{}{}
		}
		for k := range e {
			id[k] = struct{}{}
		}
	})
	return mail, id
}

// edgeChanged reports whether row r's manager, as resolved, differs from
// its user's manager in the snapshot (a new user's differs when it has one).
func (d *userDiff) edgeChanged(r *inRow) bool {
	if r.fin.mgrRow >= 0 {
		return true
	}
	if r.target < 0 {
		return r.fin.mgr != 0
	}
	return r.fin.mgr != d.snap.st[r.target].mgr
}

// breakCycles finds manager loops (A manages B manages … A) in the state
// after the file. Every row on a loop keeps its previous manager and is
// reported. Reverting can expose another loop, so it repeats.
func (d *userDiff) breakCycles() {
	n := d.snap.len()
	// Nodes: snapshot users 0..n-1, new users n+i (row i).
	rowOfSnap := func(j int) int {
		if i := d.claimed[j]; i >= 0 && !d.rows[i].rejected {
			return int(i)
		}
		return -1
	}
	next := func(node int) int {
		var mgr int64
		mgrRow := int32(-1)
		if node >= n {
			r := &d.rows[node-n]
			mgr, mgrRow = r.fin.mgr, r.fin.mgrRow
		} else if i := rowOfSnap(node); i >= 0 {
			mgr, mgrRow = d.rows[i].fin.mgr, d.rows[i].fin.mgrRow
		} else {
			mgr = d.snap.st[node].mgr
		}
		if mgrRow >= 0 {
			if d.rows[mgrRow].target >= 0 {
				return int(d.rows[mgrRow].target)
			}
			return n + int(mgrRow)
		}
		if mgr == 0 {
			return -1
		}
		return d.snap.index(mgr)
	}
	nodeOfRow := func(i int) int {
		if d.rows[i].target >= 0 {
			return int(d.rows[i].target)
		}
		return n + i
	}
	color := make([]int8, n+len(d.rows)) // by node: 1 on the current path, 2 done
	for round := 0; round < 16; round++ {
		clear(color)
		found := false
		for i := range d.rows {
			r := &d.rows[i]
			if r.rejected || !r.mgrSet {
				continue
			}
			start := nodeOfRow(i)
			var path []int
			node := start
			for node >= 0 && color[node] == 0 {
				color[node] = 1
				path = append(path, node)
				node = next(node)
			}
			if node >= 0 && color[node] == 1 {
				// A loop: from node's place in the path to the end.
				k := 0
				for path[k] != node {
					k++
				}
				if d.revertLoop(path[k:], n, rowOfSnap) {
					found = true
				}
			}
			for _, p := range path {
				color[p] = 2
			}
		}
		if !found {
			return
		}
	}
}

// revertLoop reports every file row on the loop and gives it back its
// previous manager. It returns false for a loop the file did not touch.
// A fast row (digest.go) on the loop is reported as well, as the full diff
// would: its user keeps its manager, and its digest goes.
func (d *userDiff) revertLoop(loop []int, n int, rowOfSnap func(int) int) bool {
	type onLoop struct {
		i, node int
		email   string // the user's e-mail after the file
		fast    bool
	}
	var rows []onLoop
	touched := false
	for _, node := range loop {
		// The node's row: a new user's, the open row about a user, or the
		// fast row about one (whose e-mail is the user's, unread in fin).
		i := node - n
		if node < n {
			i = rowOfSnap(node)
		}
		switch {
		case i >= 0:
			rows = append(rows, onLoop{i, node, d.rows[i].fin.email, false})
			touched = touched || d.rows[i].mgrSet
		case node < n:
			if i = d.fastUser(node); i >= 0 {
				rows = append(rows, onLoop{i, node, d.snap.st[node].email, true})
			}
		}
	}
	if !touched {
		return false
	}
	// The loop is told from its row that comes first in the file, however
	// the walk came upon it (fast rows start no walk: digest.go).
	first := 0
	for k, o := range rows {
		if d.rows[o.i].pos < d.rows[rows[first].i].pos {
			first = k
		}
	}
	rows = append(rows[first:], rows[:first]...)
	names := ""
	for k, o := range rows {
		if k > 0 {
			names += " → "
		}
		names += o.email
	}
	for _, o := range rows {
		r := &d.rows[o.i]
		col, _ := managerRef(d, r)
		if col == "" {
			col = schemas.ColManagerEmail // a row without manager columns, on the loop through its user
		}
		d.issue(r, col, schemas.CodeManagerCycle,
			fmt.Sprintf("these managers form a loop (%s); every row on it keeps its previous manager", names), d.val(r, fMgrEmail)+d.val(r, fMgrID), pipeline.SeverityError)
		if o.fast {
			d.flaggedFast = append(d.flaggedFast, d.snap.id[o.node])
			continue // its user keeps its manager: nothing to give back
		}
		if r.target >= 0 {
			r.fin.mgr, r.fin.mgrRow = d.snap.st[r.target].mgr, -1
		} else {
			r.fin.mgr, r.fin.mgrRow = 0, -1
		}
		r.mgrSet = false
	}
	return true
}
