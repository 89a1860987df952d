package sftpd

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// TestUploadVisibleOnlyWhenClosed: a half-written upload is neither on disk
// in incoming/ nor announced; after Close it is both, with the right bytes.
func TestUploadVisibleOnlyWhenClosed(t *testing.T) {
	ts := startServer(t, newMapAuth())
	k := goKey(t)
	ts.auth.addKey("acme", k.PublicKey())
	_, c := ts.sftpClient(t, "acme", ssh.PublicKeys(k))
	incoming := filepath.Join(ts.home("acme"), "incoming")
	final := filepath.Join(incoming, "half.csv")

	f, err := c.Create("/incoming/half.csv")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("id,name\n1,")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(final); !os.IsNotExist(err) {
		t.Fatalf("half-written upload visible in incoming/: %v", err)
	}
	if got := dirNames(t, incoming); len(got) != 0 {
		t.Fatalf("incoming/ holds %v", got)
	}
	if got := dirNames(t, filepath.Join(ts.home("acme"), partialDir)); len(got) != 1 {
		t.Fatalf("want one partial file, have %v", got)
	}
	if got := ts.uploads.list(); len(got) != 0 {
		t.Fatalf("OnUpload called early: %v", got)
	}
	// fstat on the open handle answers from the partial file.
	if fi, err := f.Stat(); err != nil || fi.Size() != 10 {
		t.Fatalf("fstat of upload in progress: %v, %v", fi, err)
	}
	// Another session does not see it either.
	_, c2 := ts.sftpClient(t, "acme", ssh.PublicKeys(k))
	if _, err := c2.Stat("/incoming/half.csv"); err == nil {
		t.Fatal("upload in progress visible to another session")
	}

	if _, err := f.Write([]byte("Ada\n")); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, final); got != "id,name\n1,Ada\n" {
		t.Fatalf("uploaded %q", got)
	}
	if got := ts.uploads.list(); !slices.Equal(got, []string{"acme/half.csv"}) {
		t.Fatalf("OnUpload calls %v", got)
	}
	if got := dirNames(t, filepath.Join(ts.home("acme"), partialDir)); len(got) != 0 {
		t.Fatalf("partial files left: %v", got)
	}
	if fi, err := c2.Stat("/incoming/half.csv"); err != nil || fi.Size() != 14 {
		t.Fatalf("stat after close: %v, %v", fi, err)
	}
}

// TestUploadInterrupted: a connection dropped mid-upload leaves nothing.
func TestUploadInterrupted(t *testing.T) {
	ts := startServer(t, newMapAuth())
	k := goKey(t)
	ts.auth.addKey("acme", k.PublicKey())
	conn, c := ts.sftpClient(t, "acme", ssh.PublicKeys(k))
	// An existing file must survive an interrupted overwrite untouched.
	old := filepath.Join(ts.home("acme"), "incoming", "users.csv")
	if err := os.WriteFile(old, []byte("old\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"new.csv", "users.csv"} {
		f, err := c.Create("/incoming/" + name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write([]byte("partial data")); err != nil {
			t.Fatal(err)
		}
	}
	conn.Close() // drop the connection with both files open

	partials := filepath.Join(ts.home("acme"), partialDir)
	if !waitFor(func() bool { return len(dirNames(t, partials)) == 0 }) {
		t.Fatalf("partial files left: %v", dirNames(t, partials))
	}
	if got := dirNames(t, filepath.Join(ts.home("acme"), "incoming")); !slices.Equal(got, []string{"users.csv"}) {
		t.Fatalf("incoming/ holds %v", got)
	}
	if got := readFile(t, old); got != "old\n" {
		t.Fatalf("existing file changed to %q", got)
	}
	if got := ts.uploads.list(); len(got) != 0 {
		t.Fatalf("OnUpload called for interrupted uploads: %v", got)
	}
}

// TestUploadSizeLimit: the limit is enforced while writing, and an upload
// that crosses it is discarded.
func TestUploadSizeLimit(t *testing.T) {
	const limit = 1000
	ts := startServer(t, newMapAuth(), WithMaxUploadSize(limit))
	k := goKey(t)
	ts.auth.addKey("acme", k.PublicKey())
	_, c := ts.sftpClient(t, "acme", ssh.PublicKeys(k))
	type write struct {
		off  int64
		size int
	}
	cases := []struct {
		name    string
		writes  []write
		wantErr bool
	}{
		{"exactly the limit", []write{{0, 600}, {600, 400}}, false},
		{"one byte over", []write{{0, 600}, {600, 401}}, true},
		{"far offset (sparse file)", []write{{1 << 40, 1}}, true},
		{"negative-looking huge offset", []write{{1<<63 - 1, 1}}, true},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			name := "f" + string(rune('a'+i)) + ".csv"
			f, err := c.Create("/incoming/" + name)
			if err != nil {
				t.Fatal(err)
			}
			var werr error
			for _, w := range tc.writes {
				if _, werr = f.WriteAt(bytes.Repeat([]byte("x"), w.size), w.off); werr != nil {
					break
				}
			}
			cerr := f.Close()
			final := filepath.Join(ts.home("acme"), "incoming", name)
			if !tc.wantErr {
				if werr != nil || cerr != nil {
					t.Fatalf("write: %v, close: %v", werr, cerr)
				}
				if fi, err := os.Stat(final); err != nil || fi.Size() != limit {
					t.Fatalf("stored: %v, %v", fi, err)
				}
				return
			}
			if werr == nil || !strings.Contains(werr.Error(), "maximum file size") {
				t.Fatalf("write error %v, want the size limit", werr)
			}
			if cerr == nil {
				t.Fatal("close of an oversized upload succeeded")
			}
			if _, err := os.Lstat(final); !os.IsNotExist(err) {
				t.Fatalf("oversized upload stored: %v", err)
			}
			if got := dirNames(t, filepath.Join(ts.home("acme"), partialDir)); len(got) != 0 {
				t.Fatalf("partial files left: %v", got)
			}
		})
	}
}

// TestUploadResume: opening an existing file for writing without truncation
// (resume/append) starts from its current bytes.
func TestUploadResume(t *testing.T) {
	ts := startServer(t, newMapAuth())
	k := goKey(t)
	ts.auth.addKey("acme", k.PublicKey())
	_, c := ts.sftpClient(t, "acme", ssh.PublicKeys(k))
	put := func(name, data string) {
		t.Helper()
		f, err := c.Create("/incoming/" + name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write([]byte(data)); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	put("r.csv", "id,name\n")
	f, err := c.OpenFile("/incoming/r.csv", os.O_WRONLY)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Seek(0, io.SeekEnd); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("1,Ada\n")); err != nil {
		t.Fatal(err)
	}
	// Until closed, the visible file is the old one.
	if got := readFile(t, filepath.Join(ts.home("acme"), "incoming", "r.csv")); got != "id,name\n" {
		t.Fatalf("visible file changed before close: %q", got)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(ts.home("acme"), "incoming", "r.csv")); got != "id,name\n1,Ada\n" {
		t.Fatalf("resumed file %q", got)
	}
	// Read-write handle: reads see what was written.
	rw, err := c.OpenFile("/incoming/r.csv", os.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 7)
	if _, err := rw.ReadAt(b, 0); err != nil || string(b) != "id,name" {
		t.Fatalf("read on rw handle: %q, %v", b, err)
	}
	rw.Close()
	// O_EXCL on an existing file fails; no O_CREATE on a missing one fails.
	if _, err := c.OpenFile("/incoming/r.csv", os.O_WRONLY|os.O_CREATE|os.O_EXCL); err == nil {
		t.Error("O_EXCL open of an existing file succeeded")
	}
	if _, err := c.OpenFile("/incoming/missing.csv", os.O_WRONLY); err == nil {
		t.Error("open without O_CREATE of a missing file succeeded")
	}
}
