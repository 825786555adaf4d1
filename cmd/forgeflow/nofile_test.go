//go:build unix

package main

import (
	"syscall"
	"testing"
)

// TestRaiseOpenFiles: the soft open-file limit ends at the hard one, and serve reads
// it back to keep --max-connections below it.
func TestRaiseOpenFiles(t *testing.T) {
	got := raiseOpenFiles()
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		t.Fatal(err)
	}
	if got == 0 || got != l.Cur || l.Cur != l.Max {
		t.Errorf("raiseOpenFiles = %d; limit now %d of %d", got, l.Cur, l.Max)
	}
}
