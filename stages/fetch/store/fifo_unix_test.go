//go:build unix

package store

import (
	"syscall"
	"testing"
)

func mkfifo(t testing.TB, p string) {
	t.Helper()
	must(t, syscall.Mkfifo(p, 0o644))
}
