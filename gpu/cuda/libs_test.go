package cuda

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// fakeRoot lays out files (relative paths) under a temporary root and returns a search
// environment over it with the given variables.
func fakeRoot(t *testing.T, files []string, vars map[string]string) searchEnv {
	t.Helper()
	root := t.TempDir()
	for _, f := range files {
		p := filepath.Join(root, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	env := osSearchEnv()
	env.Root = root
	env.Getenv = func(k string) string {
		v := vars[k]
		return strings.ReplaceAll(v, "$ROOT", root)
	}
	return env
}

func TestSearchOrder(t *testing.T) {
	env := fakeRoot(t, []string{
		"custom/libnvrtc.so.12",
		"usr/lib/x86_64-linux-gnu/libcuda.so.1",
		"usr/local/cuda-11.8/lib64/libnvrtc.so.11.2",
		"usr/local/cuda-12.4/lib64/libnvrtc.so.12",
		"usr/local/lib/python3.11/dist-packages/nvidia/cuda_nvrtc/lib/libnvrtc.so.12",
		"usr/local/lib/python3.11/dist-packages/nvidia/cublas/lib/libcublasLt.so.12",
		"venv/lib/python3.12/site-packages/nvidia/cu13/lib/libnvrtc.so.13",
	}, map[string]string{"LD_LIBRARY_PATH": "$ROOT/custom::$ROOT/custom", "VIRTUAL_ENV": "$ROOT/venv"})
	dirs := searchDirs(env)
	rel := func(p string) string { r, _ := filepath.Rel(env.Root, p); return r }
	idx := func(suffix string) int {
		return slices.IndexFunc(dirs, func(d string) bool { return rel(d) == suffix })
	}
	order := []string{"custom", "usr/lib/x86_64-linux-gnu", "usr/local/cuda-12.4/lib64", "usr/local/cuda-11.8/lib64",
		"venv/lib/python3.12/site-packages/nvidia/cu13/lib", "usr/local/lib/python3.11/dist-packages/nvidia/cuda_nvrtc/lib"}
	last := -1
	for _, d := range order {
		i := idx(d)
		if i < 0 {
			t.Fatalf("%s not searched: %v", d, dirs)
		}
		if i <= last {
			t.Errorf("%s searched out of order: %v", d, dirs)
		}
		last = i
	}
	if n := len(slices.Compact(slices.Clone(dirs))); n != len(dirs) {
		t.Errorf("duplicate folders in %v", dirs)
	}
	// LD_LIBRARY_PATH wins; newer sonames win over older ones wherever they are
	if p, ok := findLibrary(env, dirs, nvrtcNames); !ok || rel(p) != "venv/lib/python3.12/site-packages/nvidia/cu13/lib/libnvrtc.so.13" {
		t.Errorf("nvrtc = %q", p)
	}
	if p, ok := findLibrary(env, dirs, []string{"libnvrtc.so.12"}); !ok || rel(p) != "custom/libnvrtc.so.12" {
		t.Errorf("nvrtc 12 = %q", p)
	}
	if p, ok := findLibrary(env, dirs, driverNames); !ok || rel(p) != "usr/lib/x86_64-linux-gnu/libcuda.so.1" {
		t.Errorf("driver = %q", p)
	}
	if _, ok := findLibrary(env, dirs, []string{"libcudnn.so.9"}); ok {
		t.Error("found a library that is not there")
	}
}

func TestCUDAHomeAndWSL(t *testing.T) {
	env := fakeRoot(t, []string{"opt/cuda/lib64/libnvrtc.so.12", "usr/lib/wsl/lib/libcuda.so.1"},
		map[string]string{"CUDA_HOME": "$ROOT/opt/cuda"})
	dirs := searchDirs(env)
	if _, ok := findLibrary(env, dirs, nvrtcNames); !ok {
		t.Errorf("CUDA_HOME not searched: %v", dirs)
	}
	if _, ok := findLibrary(env, dirs, driverNames); !ok {
		t.Errorf("WSL driver folder not searched: %v", dirs)
	}
}

// TestMissingMessage checks the one line a user without CUDA sees: what is missing,
// where it looked, what to do.
func TestMissingMessage(t *testing.T) {
	env := fakeRoot(t, nil, nil)
	dirs := searchDirs(env)
	_, _, err := openLibrary(env, dirs, []string{"libforgeflow-absent.so.1"}, "libforgeflow-absent.so.1 (a test library)")
	var me *MissingError
	if !errors.As(err, &me) {
		t.Fatalf("err = %v", err)
	}
	msg := err.Error()
	for _, want := range []string{"cuda: libforgeflow-absent.so.1 (a test library) not found", "looked in ", filepath.Join(env.Root, "usr/local/cuda/lib64"), "LD_LIBRARY_PATH"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("message is not one line: %q", msg)
	}
	long := &MissingError{Library: "x", Looked: make([]string, 40)}
	if n := strings.Count(long.Error(), ","); n > 14 {
		t.Errorf("a long search list is not shortened: %d commas", n)
	}
	// a file that is there but is no library: the load error is reported, not "not found"
	bad := fakeRoot(t, []string{"usr/local/cuda/lib64/libforgeflow-bad.so.1"}, nil)
	_, _, err = openLibrary(bad, searchDirs(bad), []string{"libforgeflow-bad.so.1"}, "libforgeflow-bad.so.1")
	if err == nil || strings.Contains(err.Error(), "not found") || !strings.Contains(err.Error(), "libforgeflow-bad.so.1") {
		t.Errorf("bad library: %v", err)
	}
}
