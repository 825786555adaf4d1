package cuda

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCacheKey(t *testing.T) {
	src, err := moduleSource(modGEMM)
	if err != nil {
		t.Fatal(err)
	}
	base := cacheKey{Module: modGEMM, SourceHash: sourceHash(src), CC: 90, NVRTC: "12.4"}
	variants := []cacheKey{
		{Module: modGEMM, SourceHash: sourceHash(src + " "), CC: 90, NVRTC: "12.4"},
		{Module: modGEMM, SourceHash: base.SourceHash, CC: 89, NVRTC: "12.4"},
		{Module: modGEMM, SourceHash: base.SourceHash, CC: 90, NVRTC: "12.8"},
		{Module: modNorm, SourceHash: base.SourceHash, CC: 90, NVRTC: "12.4"},
	}
	for _, v := range variants {
		if v.file() == base.file() || v.line() == base.line() {
			t.Errorf("key %+v collides with %+v", v, base)
		}
	}
	if got := base.file(); !strings.HasPrefix(got, "gemm-") || !strings.HasSuffix(got, "-sm90-nvrtc12.4.bin") {
		t.Errorf("file name %q", got)
	}
	// every module's source differs, so no two modules share a hash
	seen := map[string]module{}
	for _, m := range modules {
		s, _ := moduleSource(m)
		h := sourceHash(s)
		if o, dup := seen[h]; dup {
			t.Errorf("modules %s and %s hash alike", m, o)
		}
		seen[h] = m
	}
}

func TestKernelCacheFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nested", "cache")
	c := kernelCache{dir: dir}
	k := cacheKey{Module: modMisc, SourceHash: strings.Repeat("ab", 32), CC: 80, NVRTC: "11.8"}
	if _, ok := c.load(k); ok {
		t.Fatal("hit in an empty cache")
	}
	want := image{Data: []byte("\x7fELF cubin bytes\nwith newlines\n")}
	if err := c.store(k, want); err != nil {
		t.Fatal(err)
	}
	got, ok := c.load(k)
	if !ok || got.PTX || string(got.Data) != string(want.Data) {
		t.Fatalf("load = %+v %v", got, ok)
	}
	ptxKey := k
	ptxKey.CC = 90
	if err := c.store(ptxKey, image{PTX: true, Data: []byte(".version 7.8")}); err != nil {
		t.Fatal(err)
	}
	if got, ok := c.load(ptxKey); !ok || !got.PTX {
		t.Fatalf("ptx load = %+v %v", got, ok)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".tmp-") {
			t.Errorf("temporary file left: %s", e.Name())
		}
	}

	path := filepath.Join(dir, k.file())
	full, _ := os.ReadFile(path)
	cases := []struct {
		name string
		data []byte
	}{
		{"truncated", full[:len(full)-3]},
		{"no-magic", full[5:]},
		{"empty", nil},
		{"other-key", []byte(strings.Replace(string(full), "sm_80", "sm_86", 1))},
		{"bad-kind", []byte(strings.Replace(string(full), "\ncubin\n", "\nfatbin\n", 1))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(path, tc.data, 0o644); err != nil {
				t.Fatal(err)
			}
			if _, ok := c.load(k); ok {
				t.Fatal("corrupt cache file accepted")
			}
			// the next store repairs it
			if err := c.store(k, want); err != nil {
				t.Fatal(err)
			}
			if got, ok := c.load(k); !ok || string(got.Data) != string(want.Data) {
				t.Fatal("not repaired")
			}
		})
	}

	if err := (kernelCache{}).store(k, want); err == nil {
		t.Error("store without a folder succeeded")
	}
	blocked := filepath.Join(t.TempDir(), "file")
	os.WriteFile(blocked, nil, 0o644)
	if err := (kernelCache{dir: filepath.Join(blocked, "sub")}).store(k, want); err == nil {
		t.Error("store under a regular file succeeded")
	}
}
