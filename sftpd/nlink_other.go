//go:build !unix

package sftpd

import (
	"io/fs"
	"os"
)

func linkCount(fs.FileInfo) uint64 { return 1 }
func isNotDir(error) bool          { return false }
func isIsDir(error) bool           { return false }

const openReadFlag = os.O_RDONLY
