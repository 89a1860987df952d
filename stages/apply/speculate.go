package apply

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/apache/arrow/go/v17/arrow"
	"github.com/apache/arrow/go/v17/arrow/array"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/schemas"
	"github.com/roster-hr/roster/stages/diff"
	"github.com/zeebo/xxh3"
)

// A first load's apply is PostgreSQL's COPY of the new users (4 s of a
// million), and until now it started only once diff had seen the whole
// file. A speculation starts it as validate ends, beside diff: the rows
// diff.Presumer can already call creates go in on a transaction of their
// own while diff decides. When the plan is ready, apply compares it with
// what was sent, row by row, by the hash of each row's COPY encoding:
//
//   - rows sent as the plan has them are kept;
//   - rows the plan has otherwise or not at all are deleted, and the plan's
//     rows that were not sent (held back, or mended) go in a second COPY,
//     all in the same transaction, which then carries on as apply always
//     does (departments, ledger, commit);
//   - when the departments differ, the plan touches existing users, or too
//     many rows would be deleted, the speculation is rolled back whole and
//     the plan applied as if there had been none.
//
// So diff stays the one judge of every row; the speculation only decides
// how early a row diff accepts reaches the server.

// speculation is apply's work on one file started ahead (pipeline.Speculator).
type speculation struct {
	run    *pipeline.Run
	f      *pipeline.File // the speculation's own view of the file
	cancel context.CancelFunc
	done   chan struct{} // closed when the work has ended

	conn    *sqlx.Conn
	tx      *sqlx.Tx
	adopted bool   // apply carries on with conn and tx
	into    string // the table the rows go into: users, or a bulk load's (bulk.go)
	bulkMin int    // bulk_min_rows: a bulk load's plan must create as many

	// Set before the COPY starts.
	custom  bool
	deptID  map[string]int64  // the tenant's departments by key, those it created included
	created map[string]string // the departments it created: key → name
	newID   []int64           // by source row: every accepted row's id, reserved up front
	sent    []xxh3.Uint128    // by source row: the hash of the row's COPY encoding
	isSent  []bool            // by source row: the rows it sent

	mu      sync.Mutex
	cond    *sync.Cond
	twin    *pipeline.CopyLine // encodes as the COPY does, for the check
	through int32              // every source row up to this one is sent (or held back)
	ended   bool               // the COPY ended (err says how), or the work stopped
	err     error
	rows    int
	started time.Time
	copyMS  int64

	closing sync.Once
}

// errNotFirstLoad stops a speculation on a tenant that has users: diff
// decides updates against them, which nothing can presume.
var errNotFirstLoad = errors.New("the tenant has users")

// Speculate starts COPYing a large first load's new users beside diff.
func (st stage) Speculate(ctx context.Context, run *pipeline.Run, f *pipeline.File) io.Closer {
	if !st.speculate || f.Kind != schemas.KindUsers || f.Rows < st.speculateMinRows || len(f.Batches) == 0 {
		return nil
	}
	accepted := 0
	for i := 0; i < f.Rows; i++ {
		if !f.Rejected.Has(i) {
			accepted++
		}
	}
	if seats, limited := run.Tenant.SeatLimit(); limited && accepted > seats {
		return nil // diff would refuse every new user
	}
	// The file as validate left it: diff adds to Rejected, Skip and Issues
	// while the speculation reads them.
	g := &pipeline.File{Name: f.Name, ID: f.ID, Kind: f.Kind, Columns: f.Columns, Rows: f.Rows,
		Batches: append([]arrow.Record(nil), f.Batches...), Rejected: f.Rejected.Clone(), Skip: map[string]pipeline.RowSet{}}
	for col, rs := range f.Skip {
		g.Skip[col] = rs.Clone()
	}
	for _, b := range g.Batches {
		b.Retain()
	}
	ctx, cancel := context.WithCancel(ctx)
	s := &speculation{run: run, f: g, cancel: cancel, done: make(chan struct{}), through: -1, started: time.Now(), bulkMin: st.bulkMinRows}
	s.cond = sync.NewCond(&s.mu)
	go func() {
		defer close(s.done)
		err := s.work(ctx, accepted, st.bulks(accepted))
		s.mu.Lock()
		s.ended, s.err = true, err
		s.copyMS = time.Since(s.started).Milliseconds()
		s.cond.Broadcast()
		s.mu.Unlock()
	}()
	return s
}

// work opens the transaction, creates the departments the rows name and
// COPYs the rows the Presumer presumes, recording each one's id and hash.
func (s *speculation) work(ctx context.Context, accepted int, bulk bool) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("speculation panicked: %v", r)
		}
	}()
	if s.conn, err = pipeline.TxConn(ctx, s.run.DB); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	if s.tx, err = s.conn.BeginTxx(ctx, nil); err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	t := s.run.Tenant.ID
	s.into = "users"
	if bulk {
		// First: the bulk load's lock comes before any read of users.
		table, _, err := startBulk(ctx, s.tx, t)
		if err != nil {
			return err
		}
		if table != "" {
			s.into = table
		}
	}
	var has bool
	if err := s.tx.GetContext(ctx, &has, `SELECT EXISTS (SELECT 1 FROM users WHERE tenant_id = $1)`, t); err != nil {
		return fmt.Errorf("look for users: %w", err)
	}
	if has {
		return errNotFirstLoad
	}
	p := diff.NewPresumer(s.run, s.f)
	keys, names := p.Departments()
	s.created = map[string]string{}
	if len(keys) > 0 {
		rows, err := s.tx.QueryContext(ctx, `INSERT INTO departments (tenant_id, name, name_key, active)
			SELECT $1, v.name, v.key, true FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS v(name, key, n) ORDER BY v.n
			ON CONFLICT (tenant_id, name_key) DO NOTHING RETURNING name_key, name`, t, pq.StringArray(names), pq.StringArray(keys))
		if err != nil {
			return fmt.Errorf("create departments: %w", err)
		}
		for rows.Next() {
			var k, n string
			if err := rows.Scan(&k, &n); err != nil {
				rows.Close()
				return fmt.Errorf("create departments: %w", err)
			}
			s.created[k] = n
		}
		if err := rows.Close(); err != nil {
			return fmt.Errorf("create departments: %w", err)
		}
	}
	a := applier{tx: s.tx, conn: s.conn.Conn, run: s.run, f: s.f}
	if s.deptID, err = a.departmentIndex(ctx); err != nil {
		return err
	}
	// Every accepted row's id, by source row, before any is sent: a row's
	// manager may come later in the file.
	ids, err := a.reserveUserIDs(ctx, max(1, accepted))
	if err != nil {
		return err
	}
	last := s.f.Batches[len(s.f.Batches)-1]
	srcs := last.Column(0).(*array.Int32)
	maxSrc := srcs.Value(srcs.Len() - 1)
	s.newID, s.sent, s.isSent = make([]int64, maxSrc+1), make([]xxh3.Uint128, maxSrc+1), make([]bool, maxSrc+1)
	for b, pos, k := 0, 0, 0; b < len(s.f.Batches); b++ {
		col := s.f.Batches[b].Column(0).(*array.Int32)
		for i := 0; i < col.Len(); i, pos = i+1, pos+1 {
			if !s.f.Rejected.Has(pos) {
				s.newID[col.Value(i)] = ids[k]
				k++
			}
		}
	}
	for _, c := range s.f.Columns {
		s.custom = s.custom || c.Type == schemas.Custom
	}
	w := rowWriter{newID: s.newID, deptID: s.deptID}
	k := 0
	_, err = pipeline.CopyRows(ctx, s.conn.Conn, s.into, createCols(s.custom), func(l *pipeline.CopyLine) error {
		s.mu.Lock()
		s.twin = l.Twin()
		s.mu.Unlock()
		for b := 0; ; b++ {
			rec, more := p.Next(s.run.Mem)
			if !more {
				return nil
			}
			if rec != nil {
				c := colsOf(rec)
				for i := 0; i < int(rec.NumRows()); i++ {
					src := c.row.Value(i)
					w.create(l, c, i, s.custom, s.run, s.f)
					s.sent[src] = xxh3.Hash128(l.Row())
					s.isSent[src] = true
					k++
					if err := l.End(); err != nil {
						rec.Release()
						return err
					}
				}
				rec.Release()
			}
			bsrc := s.f.Batches[b].Column(0).(*array.Int32)
			s.mu.Lock()
			s.through, s.rows = bsrc.Value(bsrc.Len()-1), k
			s.cond.Broadcast()
			s.mu.Unlock()
		}
	})
	return err
}

// kept is what apply keeps of a speculation: the ids of the rows it sent,
// the ones that stay as sent, and the ones to delete.
type kept struct {
	newID  []int64 // by source row
	rows   pipeline.RowSet
	n      int // rows kept
	resend int // the plan's new users not kept: held back, or sent otherwise
	drop   []int64
	custom bool
}

// has reports whether the row with source row src stays as sent.
func (k *kept) has(src int32) bool { return k.rows.Has(int(src)) }

// reach waits until the row with source row src was sent or held back and
// reports whether it may be checked: false once the work failed.
func (s *speculation) reach(src int32) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.through < src && !s.ended {
		s.cond.Wait()
	}
	return s.through >= src && (!s.ended || s.err == nil)
}

// check compares the speculation with the plan (see the top of this file).
// It returns what to keep and hands apply the transaction, or says why
// nothing can be kept; then apply closes it and goes its usual way.
func (s *speculation) check(plan *pipeline.Plan) (*kept, string) {
	if !s.reach(0) {
		return nil, s.why()
	}
	s.mu.Lock()
	twin := s.twin // set before the first row was sent
	s.mu.Unlock()
	var creates []string
	for _, r := range plan.Departments {
		act, key, name := r.Column(1).(*array.String), r.Column(4).(*array.String), r.Column(3).(*array.String)
		for i := 0; i < int(r.NumRows()); i++ {
			if act.Value(i) != schemas.ActCreate {
				continue
			}
			if s.created[key.Value(i)] != name.Value(i) {
				return nil, fmt.Sprintf("the plan creates department %q, which the speculation did not create as such", name.Value(i))
			}
			creates = append(creates, key.Value(i))
		}
	}
	if len(creates) != len(s.created) {
		return nil, fmt.Sprintf("the speculation created %d departments, the plan %d", len(s.created), len(creates))
	}
	if plan.Digests != nil && plan.Digests.NumRows() > 0 {
		return nil, "the plan stores digests of existing users"
	}
	// The speculation chose a bulk load by the rows validate accepted; a
	// plan that creates fewer (diff rejected the rest) would leave a small
	// tenant a partition of its own.
	if creates := sizeOf(plan).creates; s.into != "users" && creates < s.bulkMin {
		return nil, fmt.Sprintf("the plan creates %d users, fewer than a bulk load's %d", creates, s.bulkMin)
	}
	k := &kept{custom: s.custom}
	w := rowWriter{newID: s.newID, deptID: s.deptID}
	for _, r := range plan.Users {
		c := colsOf(r)
		for i := 0; i < int(r.NumRows()); i++ {
			if c.action.Value(i) != schemas.ActCreate {
				return nil, "the plan changes existing users"
			}
			src := c.row.Value(i)
			if !s.reach(src) {
				return nil, s.why()
			}
			if int(src) >= len(s.isSent) || !s.isSent[src] {
				k.resend++ // held back: it goes in the second COPY
				continue
			}
			twin.Reset()
			w.create(twin, c, i, s.custom, s.run, s.f)
			if xxh3.Hash128(twin.Row()) == s.sent[src] {
				k.rows.Add(int(src))
				k.n++
			} else {
				k.resend++
			}
		}
	}
	<-s.done // the COPY's end: ended and err are final
	if s.err != nil {
		return nil, s.why()
	}
	for src, id := range s.newID {
		if s.isSent[src] && !k.rows.Has(src) {
			k.drop = append(k.drop, id)
		}
	}
	// Deleting rows costs about what sending them did: past a tenth of
	// them, applying the plan afresh is as quick and simpler to trust.
	if len(k.drop) > max(1000, s.rows/10) {
		return nil, fmt.Sprintf("%d of the %d rows sent differ from the plan", len(k.drop), s.rows)
	}
	k.newID = s.newID
	s.adopted = true
	return k, ""
}

// why says why the speculation cannot be kept.
func (s *speculation) why() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case errors.Is(s.err, errNotFirstLoad):
		return "not a first load"
	case s.err != nil:
		return "it stopped: " + s.err.Error()
	}
	return "it sent nothing"
}

// Close stops the work and waits for it; unless apply carries on with
// its transaction, the transaction is rolled back and nothing of it stays.
func (s *speculation) Close() error {
	s.closing.Do(s.close)
	return nil
}

func (s *speculation) close() {
	if !s.adopted {
		s.cancel()
	}
	<-s.done
	if !s.adopted {
		if s.tx != nil {
			_ = s.tx.Rollback() // a failed COPY may have ended it already
		}
		if s.conn != nil {
			_ = s.conn.Close()
		}
	}
	s.cancel()
	for _, b := range s.f.Batches {
		b.Release()
	}
	s.f.Batches = nil
}
