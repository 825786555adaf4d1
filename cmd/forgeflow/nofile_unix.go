//go:build unix

package main

import "syscall"

// raiseOpenFiles raises the soft limit on open files to the hard limit (Go's runtime
// does so too since Go 1.19; doing it here makes it explicit and lets serve read the
// result) and returns the soft limit in force, or 0 when unknown.
func raiseOpenFiles() uint64 {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0
	}
	if l.Cur < l.Max {
		raised := l
		raised.Cur = l.Max
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised) == nil {
			l = raised
		}
	}
	return l.Cur
}
