//go:build unix

package sftpd

import (
	"errors"
	"io/fs"
	"os"
	"syscall"
)

// linkCount is the number of hard links to the file fi describes.
func linkCount(fi fs.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Nlink)
	}
	return 1
}

func isNotDir(err error) bool { return errors.Is(err, syscall.ENOTDIR) }
func isIsDir(err error) bool  { return errors.Is(err, syscall.EISDIR) }

// openReadFlag opens without blocking on a FIFO swapped in after our Lstat;
// the type is checked again on the open file.
const openReadFlag = os.O_RDONLY | syscall.O_NONBLOCK
