//go:build !unix

package mmap

import (
	"errors"
	"os"
)

// Elsewhere (windows, wasm) the file is read into memory: correct, only slower to open.
func mapFile(f *os.File, size int) ([]byte, error) {
	return nil, errors.New("mmap: not available on this platform")
}

func unmap(b []byte) error { return nil }
