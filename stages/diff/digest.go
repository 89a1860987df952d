package diff

import (
	"cmp"
	"context"
	"database/sql/driver"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/schemas"
	"github.com/zeebo/xxh3"
)

// The incremental diff.
//
// A large tenant's nightly file mostly says again what the directory
// already holds. Reading and indexing every user's state to find that out
// was most of such a run (1M users: ~2 s of reading beside the parse, ~1.6
// s of diff). Instead, apply stores with each user a digest of the file
// row that set its state (users.row_digest, migration 0007), and diff
// reads only the digests, with what it must check beside them (stored:
// ~0.3 s for a million users).
// A row whose digest is a user's stored digest, and that passes fastOK's
// checks, is "fast": it changes nothing and raises no issue, and diff
// leaves it alone. The other rows ("slow") are decided as always, against
// a snapshot of only the users they can reach (loadReach), unless they are
// too many for that to pay (Spec: incremental_max_changed_pct), when the
// whole snapshot is read as before.
//
// Why a fast row is what the full diff would decide:
//   - The digest vouches that the user's state is what applying this row
//     left: apply writes it only with that state, for a row with no issue
//     from diff, and the users_forget_row_digest trigger clears it on any
//     other change. Applying the row again gives the same state.
//   - What the digest cannot know is checked by fastOK against stored: the
//     user is active and no deactivation date of the row has come due, or
//     inactive, found by employee id, with the row's date come (so the
//     action is no deactivation or reactivation); the department the
//     row names is the user's, and active (nothing to create or
//     reactivate); the manager the row names by e-mail or id is the user's
//     manager, whose own row in the file is fast and gives that e-mail or
//     id (so a file without its managers' rows is diffed as before).
//   - A slow row can still reach a fast row's user or manager: a row about
//     the same user (an identity clash), or a new or changed e-mail or id
//     that a fast row names as its manager. Those fast rows are made slow
//     (demote) before anything is decided.
//   - A manager loop that a slow row closes may run through fast users;
//     revertLoop reports their rows as the full diff would.

// digest is a row digest: the 128-bit XXH3 of the row's encoding.
//
// Not a cryptographic hash, on purpose: the digest detects that a row says
// again what it said, it guards nothing against an attacker (the only
// author of a tenant's rows is the tenant, and a forged collision would
// only keep the forger's own change out). 128 bits make an accidental
// collision among a tenant's rows a ~2^-88 event for a million users.
// SHA-256 (version 1) was ~0.25 s of CPU per million rows of the diff,
// XXH3 is ~0.02 s.
type digest [schemas.RowDigestLen]byte

// digestVersion starts every digested row: a change to what rowDigest
// feeds the hash, or to the hash, changes it, so that no digest stored by
// an older roster ever matches (the first file after such a change is
// diffed in full and stores the new digests).
const digestVersion = "roster row digest 2\x00"

// rowDigest digests what row r says: which fields it sets, their
// normalized values and its custom cells. buf is scratch space, returned
// for reuse.
func (d *userDiff) rowDigest(r *inRow, buf []byte) (digest, []byte) {
	buf = append(buf[:0], digestVersion...)
	buf = binary.LittleEndian.AppendUint32(buf, r.has)
	text := func(s string) {
		buf = binary.AppendUvarint(buf, uint64(len(s)))
		buf = append(buf, s...)
	}
	date := func(v int32, ok bool) {
		if !ok {
			buf = append(buf, 0)
			return
		}
		buf = append(buf, 1)
		buf = binary.LittleEndian.AppendUint32(buf, uint32(v))
	}
	for fi := 0; fi < numFields; fi++ {
		if !r.sets(fi) {
			continue
		}
		switch fi {
		case fStart:
			date(r.start, r.startOK)
		case fDeact:
			date(r.deact, r.deactOK)
		default:
			text(d.val(r, fi))
		}
	}
	for _, c := range d.custom(r) {
		text(c.k)
		text(c.v)
	}
	return digest(xxh3.Hash128(buf).Bytes()), buf
}

// stored is what diff reads of every user of the tenant when it does not
// read their state: the row digest and what fastOK checks beside it.
type stored struct {
	users  []storedUser // in id order
	active int          // active users
	ids    idIndex
	// byDigest finds the user a row's digest may be (none when more than
	// one user has its hash).
	byDigest digestGroups
	// fastRow[k] is the fast row about users[k], or -1.
	fastRow []int32
}

type storedUser struct {
	id, dept, mgr int64 // dept, mgr: 0 for none
	dg            digest
	hasDg, active bool
}

// index returns the position of the user with this id in s.users, or -1.
func (s *stored) index(id int64) int { return s.ids.find(id) }

// storedSQL reads the tenant %s (a quoted literal) through
// pipeline.CopyOut.
const storedSQL = `SELECT id, row_digest, active, department_id, manager_id FROM users WHERE tenant_id = %s`

// loadStored reads the tenant's row digests.
func loadStored(ctx context.Context, db *sqlx.DB, tenant string) (*stored, error) {
	s := &stored{}
	// In chunks, joined once at the end: growing one slice to a million
	// users copied it ~20 times (~0.13 s of the read-ahead's CPU).
	var chunks [][]storedUser
	cur := make([]storedUser, 0, 1<<12)
	_, err := pipeline.CopyOut(ctx, db, fmt.Sprintf(storedSQL, pipeline.QuoteLiteral(tenant)), func(f [][]byte) error {
		if len(f) != 5 {
			return fmt.Errorf("%d columns, want 5", len(f))
		}
		var u storedUser
		var err error
		if u.id, err = binInt8(f[0], "id"); err != nil {
			return err
		}
		if f[1] != nil {
			if len(f[1]) != schemas.RowDigestLen {
				return fmt.Errorf("row_digest: %d bytes, want %d", len(f[1]), schemas.RowDigestLen)
			}
			u.dg, u.hasDg = digest(f[1]), true
		}
		if len(f[2]) != 1 {
			return fmt.Errorf("active: %d bytes", len(f[2]))
		}
		u.active = f[2][0] != 0
		if f[3] != nil {
			if u.dept, err = binInt8(f[3], "department_id"); err != nil {
				return err
			}
		}
		if f[4] != nil {
			if u.mgr, err = binInt8(f[4], "manager_id"); err != nil {
				return err
			}
		}
		if u.active {
			s.active++
		}
		if len(cur) == cap(cur) {
			chunks = append(chunks, cur)
			cur = make([]storedUser, 0, 1<<16)
		}
		cur = append(cur, u)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("diff: read row digests: %w", err)
	}
	s.users = slices.Concat(append(chunks, cur)...)
	if len(s.users) == 0 {
		return s, nil
	}
	if !slices.IsSortedFunc(s.users, byID) {
		slices.SortFunc(s.users, byID)
	}
	ids := make([]int64, len(s.users))
	for k := range s.users {
		ids[k] = s.users[k].id
	}
	s.ids, s.byDigest = newIDIndex(ids), newDigestGroups(s.users)
	return s, nil
}

func byID(a, b storedUser) int { return cmp.Compare(a.id, b.id) }

// digestRows digests every row validate accepted, on every core.
func (d *userDiff) digestRows() {
	d.dig = make([]digest, len(d.rows))
	pipeline.Parallel(len(d.rows), 1<<12, func(lo, hi int) {
		var buf []byte
		for i := lo; i < hi; i++ {
			if r := &d.rows[i]; !r.rejected {
				d.dig[i], buf = d.rowDigest(r, buf)
			}
		}
	})
}

// matchFast marks the fast rows: a stored user has the row's digest, and
// fastOK says the row would change nothing. It returns how many rows are
// left for the diff proper (rejected rows included: they still claim their
// user).
func (d *userDiff) matchFast() int {
	s := d.stored
	cand := s.byDigest.candidates(d.dig, func(i int) bool { return d.rows[i].rejected })
	wait := make([]int32, len(d.rows)) // the manager's stored index, or -1
	pipeline.Parallel(len(d.rows), 1<<14, func(lo, hi int) {
		keys := deptKeys{}
		for i := lo; i < hi; i++ {
			wait[i] = -1
			k := cand[i]
			if k < 0 {
				continue
			}
			if s.users[k].dg != d.dig[i] {
				cand[i] = -1
				continue
			}
			switch v, m := d.fastOK(&d.rows[i], &s.users[k], keys); v {
			case fastYes:
			case fastIfManagerFast:
				wait[i] = m
			default:
				cand[i] = -1
			}
		}
	})
	s.fastRow = make([]int32, len(s.users))
	for k := range s.fastRow {
		s.fastRow[k] = -1
	}
	waiting := 0
	for _, m := range wait {
		if m >= 0 {
			waiting++
		}
	}
	d.waiting = make([]waitingRow, 0, waiting)
	for i := range d.rows {
		k := cand[i]
		// Two accepted rows with one digest are two equal rows, which
		// validate rejects; the second is left to the diff all the same.
		if k < 0 || s.fastRow[k] >= 0 {
			continue
		}
		s.fastRow[k] = int32(i)
		d.rows[i].fast = true
		if wait[i] >= 0 {
			d.waiting = append(d.waiting, waitingRow{int32(i), k, wait[i]})
		}
	}
	d.checkManagerRows()
	d.settleWaiting()
	return len(d.rows) - d.fastN()
}

// settleWaiting makes slow every waiting fast row whose manager's row is
// not fast (any more), until none is: a chain of inactive managers
// unwinds from its top. It returns how many it made slow.
func (d *userDiff) settleWaiting() int {
	s, n := d.stored, 0
	for changed := true; changed; {
		changed = false
		kept := d.waiting[:0]
		for _, w := range d.waiting {
			r := &d.rows[w.row]
			if !r.fast {
				continue
			}
			if s.fastRow[w.mgr] < 0 {
				s.fastRow[w.user] = -1
				r.fast = false
				n++
				changed = true
				continue
			}
			kept = append(kept, w)
		}
		d.waiting = kept
	}
	return n
}

// waitingRow is a fast row whose manager's row must be fast too
// (fastIfManagerFast), its stored user and its manager.
type waitingRow struct{ row, user, mgr int32 }

// checkManagerRows makes slow the waiting rows whose manager has no fast
// row in the file, or one that does not give the e-mail or id they name
// their manager by. A fast row vouches for its user's state, so its
// e-mail and id are the manager's now.
func (d *userDiff) checkManagerRows() {
	s := d.stored
	// The checks read cells on every core; the rows are made slow after,
	// in one pass, so that no check reads what another writes.
	bad := make([]bool, len(d.waiting))
	pipeline.Parallel(len(d.waiting), 1<<14, func(lo, hi int) {
		for x := lo; x < hi; x++ {
			w := d.waiting[x]
			mi := s.fastRow[w.mgr]
			if mi < 0 {
				bad[x] = true
				continue
			}
			m := &d.rows[mi]
			switch col, ref := managerRef(d, &d.rows[w.row]); col {
			case schemas.ColManagerID:
				bad[x] = !m.sets(fEID) || d.val(m, fEID) != ref
			default:
				bad[x] = !m.sets(fEmail) || d.val(m, fEmail) != ref
			}
		}
	})
	kept := d.waiting[:0]
	for x, w := range d.waiting {
		if bad[x] {
			s.fastRow[w.user] = -1
			d.rows[w.row].fast = false
			continue
		}
		kept = append(kept, w)
	}
	d.waiting = kept
}

// fastVerdict is fastOK's answer.
type fastVerdict uint8

const (
	fastNo fastVerdict = iota
	fastYes
	// fastIfManagerFast: the row names its manager, whose e-mail or id
	// diff did not read: the row is fast if its manager's row is, and
	// gives that e-mail or id (checkManagerRows). The full diff finds such
	// a manager through that row too (and an inactive manager only
	// through it).
	fastIfManagerFast
)

// fastOK says whether row r, whose digest is user u's, would change
// nothing and raise no issue: what the digest cannot vouch for (see the
// top of this file).
//
// For fastIfManagerFast it also returns the manager's stored index.
func (d *userDiff) fastOK(r *inRow, u *storedUser, keys deptKeys) (fastVerdict, int32) {
	eid, email := d.val(r, fEID), d.val(r, fEmail)
	if eid == "" && email == "" {
		return fastNo, -1
	}
	due := r.sets(fDeact) && r.deactOK && r.deact <= d.today
	switch {
	case u.active && due:
		return fastNo, -1 // deactivate
	case !u.active && (!due || eid == ""):
		// reactivate; or found by e-mail, which finds an active user of
		// that e-mail first
		return fastNo, -1
	}
	if r.sets(fDept) {
		if name := d.val(r, fDept); name == "" {
			if u.dept != 0 {
				return fastNo, -1
			}
		} else {
			j, ok := d.depts.byKey[keys.of(name)]
			if !ok || !d.depts.active[j] || d.depts.id[j] != u.dept {
				return fastNo, -1
			}
		}
	}
	col, ref := managerRef(d, r)
	switch {
	case col == "":
		return fastYes, -1 // the row leaves the manager as it is
	case ref == "":
		if u.mgr == 0 {
			return fastYes, -1
		}
		return fastNo, -1
	case ref == email || (col == schemas.ColManagerID && ref == eid):
		return fastNo, -1 // self_manager
	}
	if u.mgr == 0 {
		return fastNo, -1 // the row gives the user a manager
	}
	m := d.stored.index(u.mgr)
	if m < 0 {
		return fastNo, -1
	}
	return fastIfManagerFast, int32(m)
}

// managerRef is the column and value row r names its manager by: the id
// before the e-mail; col "" when the row sets neither, ref "" when it
// empties them (col is then manager_email).
func managerRef(d *userDiff, r *inRow) (col, ref string) {
	if !r.sets(fMgrID) && !r.sets(fMgrEmail) {
		return "", ""
	}
	switch {
	case r.sets(fMgrID) && d.val(r, fMgrID) != "":
		return schemas.ColManagerID, d.val(r, fMgrID)
	case r.sets(fMgrEmail) && d.val(r, fMgrEmail) != "":
		return schemas.ColManagerEmail, d.val(r, fMgrEmail)
	}
	return schemas.ColManagerEmail, ""
}

// loadReach reads the users the slow rows can reach: the ones they name by
// e-mail or id (as themselves or as their manager), the active users a
// full-file tenant would deactivate, and every manager above those (a
// manager loop is followed through them). It makes slow the fast rows a
// slow row reaches (demote) and reads again, with the e-mails and ids the
// slow rows give or take away, until no row is made slow and no such key
// is left unread; rounds bounds that, and false means the caller reads the
// whole snapshot instead.
func (d *userDiff) loadReach(ctx context.Context) (*users, bool, error) {
	s := d.stored
	const rounds = 4
	var extra map[string]struct{} // keys a slow row changes, from the round before
	for round := 0; round < rounds; round++ {
		asked := map[string]struct{}{} // by either list
		var ids []int64
		// Each key once per list: every slow row naming one manager would
		// otherwise send the manager's e-mail again.
		var eids, emails keyList
		for i := range d.rows {
			r := &d.rows[i]
			if r.fast {
				continue
			}
			eids.ask(asked, d.val(r, fEID))
			emails.ask(asked, d.val(r, fEmail))
			if r.rejected {
				continue
			}
			switch col, ref := managerRef(d, r); {
			case ref == "":
			case col == schemas.ColManagerID:
				eids.ask(asked, ref)
			default:
				emails.ask(asked, ref)
			}
		}
		for k := range extra {
			if _, ok := asked[k]; !ok {
				eids.ask(asked, k)
				emails.ask(asked, k)
			}
		}
		if d.run.Tenant.Omitted == "deactivate" {
			for k := range s.users {
				if s.users[k].active && s.fastRow[k] < 0 {
					ids = append(ids, s.users[k].id)
				}
			}
		}
		u, err := d.readReach(ctx, ids, eids.keys, emails.keys)
		if err != nil {
			return nil, false, err
		}
		u.active = s.active
		n, touched := d.demote(u)
		unread := false
		for k := range touched {
			if _, ok := asked[k]; !ok {
				unread = true
			}
		}
		if n == 0 && !unread {
			return u, true, nil
		}
		extra = touched
	}
	return nil, false, nil
}

// keyList is a list of distinct keys loadReach asks for.
type keyList struct {
	keys []string
	seen map[string]struct{}
}

// ask adds v to the list unless it is empty or there already, and to
// asked.
func (l *keyList) ask(asked map[string]struct{}, v string) {
	if v == "" {
		return
	}
	asked[v] = struct{}{}
	if _, ok := l.seen[v]; ok {
		return
	}
	if l.seen == nil {
		l.seen = map[string]struct{}{}
	}
	l.seen[v] = struct{}{}
	l.keys = append(l.keys, v)
}

// demote makes slow the fast rows that a slow row reaches in snapshot u
// (the slow rows' users and every user they name): the row about a user a
// slow (or rejected) row is about; the rows about users who have an e-mail
// or id that a slow row gives or takes away, or who are inactive and have
// one a slow row names as its manager; and the rows that name as their
// manager an e-mail or id that a slow row gives or takes away. It returns
// how many rows it made slow, and the e-mails and ids the slow rows give
// or take away.
//
// An active manager a slow row names keeps a fast row: resolveManagers
// finds a user whose row is fast in the snapshot, active, under the e-mail
// and id the row leaves as they are, which is what deciding the row would
// give it. Demoting it made its reports, waiting on it, slow (settleWaiting),
// whose own reports followed, a level a round: one changed title in a
// million-user tree took the whole snapshot (~5 s) instead of a few reads.
// An inactive one is only found through its row (resolveManagers' maps
// hold the rows of users not active before), so its row must be decided.
func (d *userDiff) demote(u *users) (int, map[string]struct{}) {
	s := d.stored
	saved := d.snap
	d.snap = u
	defer func() { d.snap = saved }()
	n := 0
	slowUser := func(k int) {
		if i := s.fastRow[k]; i >= 0 {
			d.rows[i].fast = false
			s.fastRow[k] = -1
			n++
		}
	}
	touched, named := map[string]struct{}{}, map[string]struct{}{}
	touch := func(v string) {
		if v != "" {
			touched[v] = struct{}{}
		}
	}
	for i := range d.rows {
		r := &d.rows[i]
		if r.fast {
			continue
		}
		if _, ref := managerRef(d, r); ref != "" && !r.rejected {
			named[ref] = struct{}{}
		}
		t := d.lookup(r)
		eid, email := d.val(r, fEID), d.val(r, fEmail)
		if t < 0 {
			touch(eid)
			touch(email)
			continue
		}
		if k := s.index(u.id[t]); k >= 0 {
			slowUser(k)
		}
		old := &u.st[t]
		if r.sets(fEmail) && email != old.email {
			touch(email)
			touch(old.email)
		}
		if eid != "" && (!old.hasEID || eid != old.eid) {
			touch(eid)
			touch(old.eid)
		}
	}
	// Neither set holds "": no key of a user is ever looked up as one.
	reached := func(v string, active bool) bool {
		if _, t := touched[v]; t {
			return true
		}
		_, n := named[v]
		return n && !active
	}
	for j := range u.id {
		if st := &u.st[j]; reached(st.email, st.active) || (st.hasEID && reached(st.eid, st.active)) {
			if k := s.index(u.id[j]); k >= 0 {
				slowUser(k)
			}
		}
	}
	if len(touched) > 0 {
		for k, i := range s.fastRow {
			if i < 0 {
				continue
			}
			if _, ref := managerRef(d, &d.rows[i]); ref != "" {
				if _, ok := touched[ref]; ok {
					slowUser(k)
				}
			}
		}
	}
	if n > 0 {
		// Only a row made slow here can make a waiting row's manager
		// slow: with none, settling would walk every waiting row (a
		// million on an unchanged file) for nothing.
		n += d.settleWaiting()
	}
	return n, touched
}

// fastUser is the fast row about snapshot user j, or -1.
func (d *userDiff) fastUser(j int) int {
	if d.stored.fastRow == nil {
		return -1
	}
	if k := d.stored.index(d.snap.id[j]); k >= 0 {
		return int(d.stored.fastRow[k])
	}
	return -1
}

// readReach reads the tenant's users with one of the ids, employee ids or
// e-mails, then every manager above them that the first read did not
// bring, found through the stored manager ids (a recursive query was
// planned for a million rows a level and cost ~2 s for 60k users).
func (d *userDiff) readReach(ctx context.Context, ids []int64, eids, emails []string) (*users, error) {
	u := &users{}
	if len(ids) == 0 && len(eids) == 0 && len(emails) == 0 {
		// Every row fast (an unchanged file): nothing to ask, and the
		// query for nothing still cost a connection and a round trip
		// (~5 ms of a 100k-row file's ~250).
		u.build()
		return u, nil
	}
	var ar arena
	tenant := fmt.Sprintf(snapshotSQL, pipeline.QuoteLiteral(d.run.Tenant.ID))
	if err := u.read(ctx, d.run.DB, reachSQL(d.run.Tenant.ID, ids, eids, emails), &ar); err != nil {
		return nil, err
	}
	have := make(map[int64]bool, len(u.id))
	for _, id := range u.id {
		have[id] = true
	}
	var above []int64
	for _, id := range u.id {
		for k := d.stored.index(id); k >= 0; {
			m := d.stored.users[k].mgr
			if m == 0 || have[m] {
				break
			}
			have[m] = true
			above = append(above, m)
			k = d.stored.index(m)
		}
	}
	if len(above) > 0 {
		if err := u.read(ctx, d.run.DB, tenant+` AND u.id = ANY(`+arrayLiteral(pq.Int64Array(above), "bigint[]")+`)`, &ar); err != nil {
			return nil, err
		}
	}
	u.build()
	return u, nil
}

// reachSQL selects the tenant's users with one of the ids, employee ids or
// e-mails. Each key list is looked up on its own, e-mails once among the
// active users and once among the others, so that each lookup has an index
// (users_pkey, users_employee_id_key, users_active_email and, migration
// 0008, users_inactive_email): one WHERE joining the lists with OR could
// use none of them for the e-mails, and read the whole tenant.
func reachSQL(tenant string, ids []int64, eids, emails []string) string {
	t := pipeline.QuoteLiteral(tenant)
	idList := arrayLiteral(pq.Int64Array(ids), "bigint[]")
	eidList, emailList := arrayLiteral(pq.StringArray(eids), "text[]"), arrayLiteral(pq.StringArray(emails), "text[]")
	return fmt.Sprintf(snapshotSQL, t) + ` AND u.id IN (
		SELECT id FROM users WHERE tenant_id = ` + t + ` AND id = ANY(` + idList + `)
		UNION ALL SELECT id FROM users WHERE tenant_id = ` + t + ` AND employee_id = ANY(` + eidList + `)
		UNION ALL SELECT id FROM users WHERE tenant_id = ` + t + ` AND active AND email = ANY(` + emailList + `)
		UNION ALL SELECT id FROM users WHERE tenant_id = ` + t + ` AND NOT active AND email = ANY(` + emailList + `))`
}

// arrayLiteral is the array v (a lib/pq array, which escapes its
// elements) as one quoted SQL literal cast to typ: the server parses it as
// an array much faster than an ARRAY[…] of as many constants.
func arrayLiteral(v driver.Valuer, typ string) string {
	text, _ := v.Value() // lib/pq's arrays never fail; a nil one is NULL
	if text == nil {
		text = "{}"
	}
	return pipeline.QuoteLiteral(text.(string)) + "::" + typ
}
