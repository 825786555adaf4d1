// Package mmap maps a model file read-only into memory, or reads it whole where mapping is
// unavailable. It is internal to weights/: the format packages keep it behind their API.
package mmap

import (
	"fmt"
	"os"
)

// Region is a read-only view of a whole file. Data must not be written to, and must not be
// used after Close.
type Region struct {
	Data   []byte
	mapped bool
}

// Open maps the named file. An empty file gives an empty Region. When the platform or the
// file system refuses the mapping, the file is read into memory instead (Mapped reports
// which happened).
func Open(path string) (*Region, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := st.Size()
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	if size == 0 {
		return &Region{Data: []byte{}}, nil
	}
	if int64(int(size)) != size {
		return nil, fmt.Errorf("%s: file of %d bytes is too large to map", path, size)
	}
	if data, err := mapFile(f, int(size)); err == nil {
		return &Region{Data: data, mapped: true}, nil
	}
	return ReadAll(f, size)
}

// ReadAll reads size bytes of f into memory: the pure read fallback.
func ReadAll(f *os.File, size int64) (*Region, error) {
	data := make([]byte, size)
	if _, err := f.ReadAt(data, 0); err != nil {
		return nil, err
	}
	return &Region{Data: data}, nil
}

// Mapped reports whether the data is memory-mapped (false: it was read into memory).
func (r *Region) Mapped() bool { return r.mapped }

// Close releases the mapping. Calling it twice is harmless.
func (r *Region) Close() error {
	if r == nil || r.Data == nil {
		return nil
	}
	data := r.Data
	r.Data = nil
	if r.mapped {
		r.mapped = false
		return unmap(data)
	}
	return nil
}
