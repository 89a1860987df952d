package main

// Fault injection through the command line (issue #8): the SFTP store
// killed in the middle of a download, and the data dir's disk full while a
// file is staged. (PostgreSQL restarted mid-apply: stages/faults_test.go.)

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roster-hr/roster/stages/fetch/store/sshdtest"
)

// paddedUsers is a valid user file of n rows, each carrying pad bytes in a
// column roster ignores (unknown_column): big to move, cheap to apply.
func paddedUsers(n, pad int) []byte {
	var b bytes.Buffer
	b.WriteString("email,first_name,last_name,notes\n")
	filler := strings.Repeat("x", pad)
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "user%d@example.com,First,Last,%s\n", i, filler)
	}
	return b.Bytes()
}

// stagedFiles lists what staging holds for a tenant, temporary files
// included.
func stagedFiles(t *testing.T, dataDir, tenant string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dataDir, "staging", tenant))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// upload puts body as users.csv in tenant's incoming/ on the local store
// and returns that directory.
func (c *cli) upload(tenant string, body []byte) string {
	c.t.Helper()
	in := filepath.Join(c.dataDir, "sftp", tenant, "incoming")
	if err := os.MkdirAll(in, 0o750); err != nil {
		c.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(in, "users.csv"), body, 0o640); err != nil {
		c.t.Fatalf("the upload: %v", err)
	}
	return in
}

// runFailsForSystem runs tenant's files and checks the run failed as the
// operator's to fix, its reason saying reason.
func (c *cli) runFailsForSystem(tenant, reason string) {
	c.t.Helper()
	code, stdout, stderr := c.roster(context.Background(), "run", "--tenant", tenant, "--json")
	var out runJSON
	if err := json.Unmarshal([]byte(stdout), &out); err != nil {
		c.t.Fatalf("exit %d, output %q %q: %v", code, stdout, stderr, err)
	}
	if code != exitFailed || out.Status != "failed" || out.Class != "system" || !strings.Contains(out.Reason, reason) {
		c.t.Fatalf("exit %d, %+v; want a system failure saying %q", code, out, reason)
	}
	c.t.Logf("reason: %s", out.Reason)
}

// runAppliesAndKeeps runs tenant's files and checks the run applied rows
// users and staging holds the upload and its metadata.
func (c *cli) runAppliesAndKeeps(tenant string, rows int) {
	c.t.Helper()
	if code, stdout, stderr := c.roster(context.Background(), "run", "--tenant", tenant, "--json"); code != exitOK {
		c.t.Fatalf("the run: exit %d %s %s", code, stdout, stderr)
	}
	if n := c.count(`SELECT count(*) FROM users`); n != rows {
		c.t.Fatalf("%d users, want %d", n, rows)
	}
	if s := stagedFiles(c.t, c.dataDir, tenant); len(s) != 2 { // <sha256> and its .meta.jsonl
		c.t.Fatalf("staging holds %v, want the file and its metadata", s)
	}
}

// TestStoreKilledMidDownload: the customer's SFTP server dies while roster
// downloads a file. The run fails as a system failure, the remote file and
// its marker stay in incoming/ untouched, staging keeps nothing of the
// partial download and nothing is applied; the next run takes the file.
// (Retries with backoff of a call that had not yet received data, and
// reconnection, are stages/fetch/store's TestSFTPRetryReconnects.)
func TestStoreKilledMidDownload(t *testing.T) {
	srv := sshdtest.Start(t)
	c := newCLI(t)
	c.must("tenant", "add", "acme")
	const rows = 200
	body := paddedUsers(rows, 160<<10) // 32 MB
	sum := sha256.Sum256(body)
	in := filepath.Join(srv.Root, "incoming")
	if err := os.WriteFile(filepath.Join(in, "users.csv"), body, 0o644); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(in, "users.csv.done"), nil, 0o644) //nolint:errcheck
	args := []string{"run", "--tenant", "acme", "--store", "sftp://" + srv.User + "@" + srv.Addr + srv.RemoteRoot,
		"--store-key", srv.KeyFile, "--known-hosts", srv.KnownHostsFile, "--stable-after", "0s", "--json"}

	type result struct {
		code     int
		out, err string
	}
	done := make(chan result, 1)
	go func() {
		code, out, errs := c.roster(context.Background(), args...)
		done <- result{code, out, errs}
	}()
	// Kill the server's sessions once the download has begun.
	var res result
	killed, deadline := 0, time.Now().Add(60*time.Second)
wait:
	for {
		select {
		case res = <-done:
			break wait
		default:
		}
		if killed == 0 {
			for _, name := range stagedFiles(t, c.dataDir, "acme") {
				if fi, err := os.Stat(filepath.Join(c.dataDir, "staging", "acme", name)); err == nil && strings.HasPrefix(name, ".fetch-") && fi.Size() > 0 {
					killed = srv.KillSessions()
					t.Logf("killed %d sshd session processes after %d of %d bytes", killed, fi.Size(), len(body))
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the run did not finish")
		}
		time.Sleep(time.Millisecond)
	}
	if killed == 0 {
		t.Fatalf("the download finished before it could be interrupted (exit %d): make the file bigger", res.code)
	}
	var out runJSON
	if err := json.Unmarshal([]byte(res.out), &out); err != nil {
		t.Fatalf("exit %d, output %q %q: %v", res.code, res.out, res.err, err)
	}
	if res.code != exitFailed || out.Status != "failed" || out.Class != "system" || len(out.Files) != 1 || out.Files[0].Status != "failed" {
		t.Fatalf("exit %d, %+v; want a failed run, system class", res.code, out)
	}
	// The reason names the file once, then what failed: the stage, the
	// store and the remote path (it used to repeat the name at each step).
	t.Logf("reason: %s", out.Reason)
	if !strings.HasPrefix(out.Reason, "users.csv: fetch: store: sftp: ") || strings.Count(out.Reason, "users.csv") != 2 {
		t.Errorf("reason %q: want the file's name, then fetch, the store and the remote path", out.Reason)
	}
	got, err := os.ReadFile(filepath.Join(in, "users.csv"))
	if err != nil || sha256.Sum256(got) != sum {
		t.Fatalf("the remote file changed or moved: %v", err)
	}
	if _, err := os.Stat(filepath.Join(in, "users.csv.done")); err != nil {
		t.Fatalf("the marker moved: %v", err)
	}
	if s := stagedFiles(t, c.dataDir, "acme"); len(s) != 0 {
		t.Fatalf("staging keeps %v after the interrupted download", s)
	}
	if n := c.count(`SELECT count(*) FROM users`); n != 0 {
		t.Fatalf("%d users applied from a partial download", n)
	}

	// The next run takes the file.
	code, stdout, stderr := c.roster(context.Background(), args...)
	if code != exitOK {
		t.Fatalf("the next run: exit %d %s %s", code, stdout, stderr)
	}
	if n := c.count(`SELECT count(*) FROM users`); n != rows {
		t.Fatalf("%d users after the next run, want %d", n, rows)
	}
	if _, err := os.Stat(filepath.Join(srv.Root, "processed", "users.csv")); err != nil {
		t.Fatalf("not moved to processed/: %v", err)
	}
}

// mountTmpfs mounts a tmpfs of size on dir, or skips saying why it cannot.
func mountTmpfs(t *testing.T, dir, size string) (remount func(size string)) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("mounting a small tmpfs to fill the data dir needs root (CAP_SYS_ADMIN); not root here")
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0755", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs on the data dir (mount -t tmpfs: %v: %s): this sandbox does not allow mounts", err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			exec.Command("umount", "-l", dir).Run() //nolint:errcheck
			t.Logf("umount %s: %v %s", dir, err, out)
		}
	})
	return func(size string) {
		if out, err := exec.Command("mount", "-o", "remount,size="+size, dir).CombinedOutput(); err != nil {
			t.Fatalf("remount: %v %s", err, out)
		}
	}
}

// TestDataDirFullDuringStaging: the data dir's disk fills while an upload
// is copied into staging (a 1 MiB tmpfs holding a 700 KB upload). The run
// fails as a system failure saying the disk is full, no stage after fetch
// sees the file, staging keeps no partial or temporary file, and the upload
// stays in incoming/; once there is room, the next run applies it.
func TestDataDirFullDuringStaging(t *testing.T) {
	c := newCLI(t)
	remount := mountTmpfs(t, c.dataDir, "1m")
	c.must("tenant", "add", "acme")
	const rows = 100
	body := paddedUsers(rows, 7<<10) // ~700 KB: fits once, not twice
	in := c.upload("acme", body)
	c.runFailsForSystem("acme", "no space left on device")
	if s := stagedFiles(t, c.dataDir, "acme"); len(s) != 0 {
		t.Fatalf("staging keeps %v after the failed copy", s)
	}
	if n := c.count(`SELECT count(*) FROM run_stages WHERE file_id IS NOT NULL AND stage NOT IN ('fetch', 'report')`); n != 0 {
		t.Fatalf("%d stages after fetch ran on the partial file", n)
	}
	if n := c.count(`SELECT count(*) FROM users`); n != 0 {
		t.Fatalf("%d users applied", n)
	}
	if _, err := os.Stat(filepath.Join(in, "users.csv")); err != nil {
		t.Fatalf("the upload left incoming/: %v", err)
	}

	// Room again: the next run applies the file.
	remount("8m")
	c.runAppliesAndKeeps("acme", rows)
}

// TestStagedCopyKeptBeforeApply: the received copy cannot be kept under its
// content's name (staging holds a directory there), which fetch finds out
// in the background while the later stages already read the bytes. The
// file fails as the operator's to fix, nothing is applied, the upload stays
// in incoming/ and staging keeps no temporary name; once the name is free,
// the next run applies the file and keeps its copy.
func TestStagedCopyKeptBeforeApply(t *testing.T) {
	c := newCLI(t)
	c.must("tenant", "add", "acme")
	const rows = 20
	body := paddedUsers(rows, 10)
	in := c.upload("acme", body)
	sum := sha256.Sum256(body)
	blocker := filepath.Join(c.dataDir, "staging", "acme", hex.EncodeToString(sum[:]))
	if err := os.MkdirAll(filepath.Join(blocker, "in-the-way"), 0o750); err != nil {
		t.Fatal(err)
	}
	c.runFailsForSystem("acme", "store in staging")
	if n := c.count(`SELECT count(*) FROM users`); n != 0 {
		t.Fatalf("%d users applied from a file whose copy was not kept", n)
	}
	if s := stagedFiles(t, c.dataDir, "acme"); !slices.Equal(s, []string{filepath.Base(blocker)}) {
		t.Fatalf("staging holds %v, want only what was in the way", s)
	}
	if _, err := os.Stat(filepath.Join(in, "users.csv")); err != nil {
		t.Fatalf("the upload left incoming/: %v", err)
	}

	if err := os.RemoveAll(blocker); err != nil {
		t.Fatal(err)
	}
	c.runAppliesAndKeeps("acme", rows)
	kept, err := os.ReadFile(blocker)
	if err != nil || !bytes.Equal(kept, body) {
		t.Fatalf("staging's copy: %v, equal to the upload: %v", err, bytes.Equal(kept, body))
	}
}
