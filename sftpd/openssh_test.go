package sftpd

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// TestOpenSSHClient drives the real OpenSSH sftp client, as a customer
// would, against two tenants, with files, links and a FIFO planted on disk
// by "someone else". The steps share the server and run in order.
func TestOpenSSHClient(t *testing.T) {
	needTools(t, "sftp", "ssh-keygen")
	ts := startServer(t, newMapAuth())
	acmeKey := ts.opensshKey(t, "acme")
	globexKey := ts.opensshKey(t, "globex")
	for _, tenant := range []string{"acme", "globex"} {
		if err := ts.srv.EnsureHome(tenant); err != nil {
			t.Fatal(err)
		}
	}
	acme, globex := ts.home("acme"), ts.home("globex")
	local := t.TempDir()
	write := func(p, content string) {
		t.Helper()
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(local, "hello.csv"), "id,name\n1,Ada\n")
	write(filepath.Join(globex, "incoming", "secret.csv"), "globex secret\n")
	write(filepath.Join(acme, "reports", "r1.report.csv"), "row,issue\n")
	outside := filepath.Join(ts.dataDir, "outside.txt")
	write(outside, "outside the home\n")
	plant := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	plant(os.Symlink("/etc", filepath.Join(acme, "incoming", "evil")))
	plant(os.Symlink("/etc/passwd", filepath.Join(acme, "incoming", "pw")))
	plant(os.Symlink("../../globex/incoming", filepath.Join(acme, "processed", "peek")))
	plant(os.Link(outside, filepath.Join(acme, "reports", "hardlink.csv")))
	plant(syscall.Mkfifo(filepath.Join(acme, "reports", "fifo"), 0o644))

	L := func(name string) string { return filepath.Join(local, name) }
	steps := []struct {
		name    string
		tenant  string
		batch   string
		wantErr bool
		reason  string   // in the server's log of this step (why it was refused)
		want    []string // in stdout
		notWant []string // in stdout
		check   func(t *testing.T)
	}{
		{
			name: "upload", tenant: "acme",
			batch: "put " + L("hello.csv") + " /incoming/hello.csv\n",
			check: func(t *testing.T) {
				if got := readFile(t, filepath.Join(acme, "incoming", "hello.csv")); got != "id,name\n1,Ada\n" {
					t.Errorf("uploaded file = %q", got)
				}
				if got := ts.uploads.list(); !slices.Equal(got, []string{"acme/hello.csv"}) {
					t.Errorf("OnUpload calls = %v", got)
				}
				if got := dirNames(t, filepath.Join(acme, partialDir)); len(got) != 0 {
					t.Errorf("partial files left: %v", got)
				}
			},
		},
		{
			name: "list root shows the four folders only", tenant: "acme",
			batch:   "ls -1 /\n",
			want:    []string{"/incoming", "/processed", "/failed", "/reports"},
			notWant: []string{"partial", "globex", "acme"},
		},
		{
			name: "list incoming hides links", tenant: "acme",
			batch:   "ls -1 /incoming\n",
			want:    []string{"hello.csv"},
			notWant: []string{"evil", "pw", "secret"},
		},
		{
			name: "list reports hides hard link and fifo", tenant: "acme",
			batch:   "ls -1 /reports\n",
			want:    []string{"r1.report.csv"},
			notWant: []string{"hardlink", "fifo"},
		},
		{
			name: "get upload and report", tenant: "acme",
			batch: "get /incoming/hello.csv " + L("back.csv") + "\nget /reports/r1.report.csv " + L("r1.csv") + "\n",
			check: func(t *testing.T) {
				if got := readFile(t, L("back.csv")); got != "id,name\n1,Ada\n" {
					t.Errorf("downloaded %q", got)
				}
				if got := readFile(t, L("r1.csv")); got != "row,issue\n" {
					t.Errorf("downloaded report %q", got)
				}
			},
		},
		{
			name: "cd .. stays at the home's top", tenant: "acme",
			batch:   "cd /incoming\ncd ..\ncd ..\npwd\nls -1\n",
			want:    []string{"Remote working directory: /\n", "incoming"},
			notWant: []string{"globex", "acme"},
		},
		{name: "get other tenant via /..", tenant: "acme", wantErr: true,
			batch: "get /../globex/incoming/secret.csv " + L("x1") + "\n"},
		{name: "get other tenant via relative ..", tenant: "acme", wantErr: true,
			batch: "cd /incoming\nget ../../globex/incoming/secret.csv " + L("x2") + "\n"},
		{name: "get ../../etc/passwd", tenant: "acme", wantErr: true,
			batch: "get ../../etc/passwd " + L("x3") + "\n"},
		{name: "get /etc/passwd", tenant: "acme", wantErr: true,
			batch: "get /etc/passwd " + L("x4") + "\n"},
		{name: "case-sensitive: cd /Incoming", tenant: "acme", wantErr: true,
			batch: "cd /Incoming\n"},
		{name: "case-sensitive: put /Incoming/x", tenant: "acme", wantErr: true, reason: "read-only",
			batch: "put " + L("hello.csv") + " /Incoming/x.csv\n"},
		{
			name: "put to /reports refused", tenant: "acme", wantErr: true, reason: "read-only",
			batch: "put " + L("hello.csv") + " /reports/x.csv\n",
			check: func(t *testing.T) {
				if _, err := os.Lstat(filepath.Join(acme, "reports", "x.csv")); !os.IsNotExist(err) {
					t.Errorf("file written to reports: %v", err)
				}
			},
		},
		{name: "put to / refused", tenant: "acme", wantErr: true, reason: "read-only",
			batch: "put " + L("hello.csv") + " /x.csv\n"},
		{name: "rm in /reports refused", tenant: "acme", wantErr: true, reason: "read-only",
			batch: "rm /reports/r1.report.csv\n"},
		{name: "mkdir refused", tenant: "acme", wantErr: true, reason: "folders cannot be created",
			batch: "mkdir /incoming/sub\n"},
		{name: "rmdir refused", tenant: "acme", wantErr: true, reason: "folders cannot be created",
			batch: "rmdir /failed\n"},
		{name: "symlink refused", tenant: "acme", wantErr: true, reason: "links are not supported",
			batch: "ln -s /etc /incoming/link\n"},
		{name: "hard link refused", tenant: "acme", wantErr: true, reason: "links are not supported",
			batch: "ln /incoming/hello.csv /incoming/hard.csv\n"},
		{name: "planted dir symlink not followed (get)", tenant: "acme", wantErr: true, reason: "symbolic links are not followed",
			batch: "get /incoming/evil/passwd " + L("x5") + "\n"},
		{name: "planted dir symlink not followed (ls)", tenant: "acme", wantErr: true, reason: "symbolic links are not followed",
			batch: "ls /incoming/evil\n"},
		{name: "planted dir symlink not followed (cd)", tenant: "acme", wantErr: true, reason: "symbolic links are not followed",
			batch: "cd /incoming/evil\n"},
		{name: "planted file symlink not followed", tenant: "acme", wantErr: true, reason: "symbolic links are not followed",
			batch: "get /incoming/pw " + L("x6") + "\n"},
		{name: "planted symlink inside root not followed", tenant: "acme", wantErr: true, reason: "symbolic links are not followed",
			batch: "ls /processed/peek\n"},
		{name: "planted hard link refused", tenant: "acme", wantErr: true, reason: "several links",
			batch: "get /reports/hardlink.csv " + L("x7") + "\n"},
		{name: "fifo refused", tenant: "acme", wantErr: true, reason: "not a regular file",
			batch: "get /reports/fifo " + L("x8") + "\n"},
		{name: "dot names refused", tenant: "acme", wantErr: true, reason: "must not start with '.'",
			batch: "put " + L("hello.csv") + " /incoming/.hidden\n"},
		{name: ".partial unreachable (ls)", tenant: "acme", wantErr: true, reason: "must not start with '.'",
			batch: "ls /.partial\n"},
		{name: ".partial unreachable (put)", tenant: "acme", wantErr: true, reason: "must not start with '.'",
			batch: "put " + L("hello.csv") + " /.partial/x\n"},
		{
			name: "chmod is accepted and ignored", tenant: "acme",
			batch: "chmod 777 /incoming/hello.csv\n",
			check: func(t *testing.T) {
				fi, err := os.Stat(filepath.Join(acme, "incoming", "hello.csv"))
				if err != nil || fi.Mode().Perm() != 0o640 {
					t.Errorf("mode after chmod: %v, %v", fi.Mode(), err)
				}
			},
		},
		{
			name: "rename within incoming", tenant: "acme",
			batch: "rename /incoming/hello.csv /incoming/users.csv\n",
			check: func(t *testing.T) {
				if got := dirNames(t, filepath.Join(acme, "incoming")); !slices.Contains(got, "users.csv") || slices.Contains(got, "hello.csv") {
					t.Errorf("incoming after rename: %v", got)
				}
				if got := ts.uploads.list(); !slices.Contains(got, "acme/users.csv") {
					t.Errorf("OnUpload calls = %v", got)
				}
			},
		},
		{name: "rename out of incoming refused", tenant: "acme", wantErr: true, reason: "read-only",
			batch: "rename /incoming/users.csv /processed/users.csv\n"},
		{
			name: "second tenant sees nothing of the first", tenant: "globex",
			batch:   "ls -1 /incoming\nls -1 /reports\n",
			want:    []string{"secret.csv"},
			notWant: []string{"users.csv", "hello.csv", "r1.report.csv", "evil"},
		},
		{name: "second tenant cannot get the first's file", tenant: "globex", wantErr: true,
			batch: "get /incoming/users.csv " + L("x9") + "\n"},
		{
			name: "remove own upload", tenant: "acme",
			batch: "rm /incoming/users.csv\n",
			check: func(t *testing.T) {
				if _, err := os.Lstat(filepath.Join(acme, "incoming", "users.csv")); !os.IsNotExist(err) {
					t.Errorf("still there: %v", err)
				}
			},
		},
	}
	keys := map[string]string{"acme": acmeKey, "globex": globexKey}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			logStart := len(ts.logs.String())
			stdout, stderr, code := ts.sftpBatch(t, keys[st.tenant], st.tenant, st.batch)
			if gotErr := code != 0; gotErr != st.wantErr {
				t.Fatalf("exit code %d, want error %v\nstdout:\n%s\nstderr:\n%s", code, st.wantErr, stdout, stderr)
			}
			for _, w := range st.want {
				if !strings.Contains(stdout, w) {
					t.Errorf("stdout lacks %q:\n%s", w, stdout)
				}
			}
			for _, w := range st.notWant {
				if strings.Contains(stdout, w) {
					t.Errorf("stdout has %q:\n%s", w, stdout)
				}
			}
			if log := ts.logs.String()[logStart:]; !strings.Contains(log, st.reason) {
				t.Errorf("server log lacks %q:\n%s", st.reason, log)
			}
			if st.check != nil {
				st.check(t)
			}
		})
	}
	// Nothing a client did may have escaped: the outside file is intact and
	// no file appeared beside the homes.
	if got := readFile(t, outside); got != "outside the home\n" {
		t.Errorf("outside file changed: %q", got)
	}
	if got := dirNames(t, ts.root); !slices.Equal(got, []string{"acme", "globex"}) {
		t.Errorf("root holds %v", got)
	}
}

// TestOpenSSHNoShellNoSCP: legacy scp and remote commands are refused with
// a message; modern scp (which speaks SFTP) works.
func TestOpenSSHNoShellNoSCP(t *testing.T) {
	needTools(t, "ssh", "scp", "ssh-keygen")
	ts := startServer(t, newMapAuth())
	key := ts.opensshKey(t, "acme")
	src := filepath.Join(t.TempDir(), "f.csv")
	if err := os.WriteFile(src, []byte("a,b\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	opts := ts.sshOpts(t, key)
	cases := []struct {
		name     string
		tool     string
		args     []string
		wantCode int // -1: any non-zero
		wantFile string
	}{
		{"legacy scp -O upload", "scp", append(append([]string{"-O"}, opts...), "-P", ts.port, src, "acme@127.0.0.1:/incoming/legacy.csv"), -1, ""},
		{"legacy scp -O download", "scp", append(append([]string{"-O"}, opts...), "-P", ts.port, "acme@127.0.0.1:/incoming/x", t.TempDir()), -1, ""},
		{"ssh command", "ssh", append(opts, "-p", ts.port, "acme@127.0.0.1", "ls", "/"), 1, ""},
		{"ssh shell", "ssh", append(opts, "-T", "-p", ts.port, "acme@127.0.0.1"), 1, ""},
		{"scp over sftp works", "scp", append(slices.Clone(opts), "-P", ts.port, src, "acme@127.0.0.1:/incoming/modern.csv"), 0, "modern.csv"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			stdout, stderr, code := runTool(t, "", c.tool, c.args...)
			switch {
			case c.wantCode == 0 && code != 0, c.wantCode > 0 && code != c.wantCode, c.wantCode < 0 && code == 0:
				t.Fatalf("exit code %d, want %d\nstdout: %s\nstderr: %s", code, c.wantCode, stdout, stderr)
			}
			if c.wantCode != 0 && !strings.Contains(stderr, "only speaks SFTP") {
				t.Errorf("stderr lacks the explanation: %q", stderr)
			}
			if c.wantFile != "" {
				if got := readFile(t, filepath.Join(ts.home("acme"), "incoming", c.wantFile)); got != "a,b\n" {
					t.Errorf("uploaded %q", got)
				}
			}
		})
	}
	if _, err := os.Lstat(filepath.Join(ts.home("acme"), "incoming", "legacy.csv")); !os.IsNotExist(err) {
		t.Errorf("legacy scp wrote a file: %v", err)
	}
}
