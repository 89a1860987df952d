//go:build !linux

package pipeline

// dropCache is a no-op where posix_fadvise is not at hand.
func dropCache(string) {}
