//go:build !unix

package main

// raiseOpenFiles has no open-file limit to raise on this system; 0 means unknown.
func raiseOpenFiles() uint64 { return 0 }
