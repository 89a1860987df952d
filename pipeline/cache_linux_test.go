package pipeline

import (
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// resident counts path's pages in the page cache (mincore over a map).
func resident(t *testing.T, path string) (in, all int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	m, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m) //nolint:errcheck
	vec := make([]byte, (len(m)+os.Getpagesize()-1)/os.Getpagesize())
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Fatal(errno)
	}
	for _, v := range vec {
		if v&1 != 0 {
			in++
		}
	}
	return in, len(vec)
}

// TestReleaseDropsTheStagedCopyFromTheCache: once a file is done, its
// staged copy, kept on disk under its content's name, no longer holds
// pages in memory; the run's own name for it is gone.
func TestReleaseDropsTheStagedCopyFromTheCache(t *testing.T) {
	dir := t.TempDir()
	// On tmpfs (a TMPDIR in memory) the cache is the file: nothing to drop.
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err == nil && (fs.Type == unix.TMPFS_MAGIC || fs.Type == unix.RAMFS_MAGIC) {
		t.Skip("the temporary directory is in memory (tmpfs): its pages cannot be dropped")
	}
	tmp, final := filepath.Join(dir, ".fetch-1"), filepath.Join(dir, "content")
	data := make([]byte, 4<<20)
	for i := range data {
		data[i] = byte(i)
	}
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f := &File{Staged: tmp, Temp: []string{tmp}}
	f.KeepInBackground(func() error {
		g, err := os.OpenFile(tmp, os.O_RDWR, 0)
		if err != nil {
			return err
		}
		defer g.Close()
		if err := g.Sync(); err != nil {
			return err
		}
		return os.Link(tmp, final)
	})
	if err := f.Kept(); err != nil {
		t.Fatal(err)
	}
	if in, all := resident(t, final); in < all/2 {
		t.Skipf("only %d of %d pages cached just after the write: this machine's cache says nothing here", in, all)
	}
	f.ReleaseBatches()
	if in, all := resident(t, final); in > all/8 {
		t.Fatalf("%d of %d pages of the kept copy still cached after the file was released", in, all)
	}
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Fatalf("the run's name for the staged copy is still there: %v", err)
	}
	if b, err := os.ReadFile(final); err != nil || len(b) != len(data) {
		t.Fatalf("the kept copy: %d bytes, %v", len(b), err)
	}
}
