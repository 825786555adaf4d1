package mmap

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	full := filepath.Join(dir, "f")
	want := bytes.Repeat([]byte("forgeflow"), 1000)
	os.WriteFile(full, want, 0o644)
	empty := filepath.Join(dir, "e")
	os.WriteFile(empty, nil, 0o644)

	r, err := Open(full)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(r.Data, want) {
		t.Errorf("mapped data differs")
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil || r.Data != nil {
		t.Errorf("second Close: %v", err)
	}

	fh, _ := os.Open(full)
	defer fh.Close()
	rr, err := ReadAll(fh, int64(len(want)))
	if err != nil || rr.Mapped() || !bytes.Equal(rr.Data, want) {
		t.Errorf("ReadAll: %v, mapped %v", err, rr.Mapped())
	}

	re, err := Open(empty)
	if err != nil || len(re.Data) != 0 {
		t.Errorf("empty file: %v, %d bytes", err, len(re.Data))
	}
	if _, err := Open(dir); err == nil {
		t.Errorf("directory: no error")
	}
	if _, err := Open(filepath.Join(dir, "missing")); err == nil {
		t.Errorf("missing file: no error")
	}
}
