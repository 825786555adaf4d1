package cuda

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Library names, most recent first. libcuda comes with the driver (one soname); NVRTC
// and cuBLAS change soname with the CUDA major version (11.x kept libnvrtc.so.11.2).
var (
	driverNames = []string{"libcuda.so.1", "libcuda.so"}
	nvrtcNames  = []string{"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2", "libnvrtc.so"}
)

// searchEnv is what the library search reads from the machine; tests give fake folders.
type searchEnv struct {
	// Getenv reads an environment variable (LD_LIBRARY_PATH, CUDA_PATH, CUDA_HOME).
	Getenv func(string) string
	// Glob lists paths matching a pattern (filepath.Glob).
	Glob func(string) ([]string, error)
	// Exists reports whether a regular file (or a link to one) is at path.
	Exists func(string) bool
	// Roots are the folders that hold system libraries, the driver's among them, and
	// the site-packages folders are looked for under them ("/" in production).
	Root string
}

func osSearchEnv() searchEnv {
	return searchEnv{
		Getenv: os.Getenv,
		Glob:   filepath.Glob,
		Exists: func(p string) bool {
			st, err := os.Stat(p)
			return err == nil && st.Mode().IsRegular()
		},
		Root: "/",
	}
}

// searchDirs returns the folders searched for the CUDA libraries, in order, without
// duplicates: LD_LIBRARY_PATH; the driver's folders (where the distribution or the
// NVIDIA installer puts libcuda.so.1, WSL's /usr/lib/wsl/lib included); the toolkit's
// lib64 under CUDA_PATH, CUDA_HOME and /usr/local/cuda*; then the nvidia/*/lib folders
// of Python environments, where PyTorch's CUDA wheels install libnvrtc and libcublas
// (nvidia/cuda_nvrtc/lib, nvidia/cublas/lib, and CUDA 13's nvidia/cu13/lib).
func searchDirs(env searchEnv) []string {
	var dirs []string
	add := func(ds ...string) {
		for _, d := range ds {
			if d == "" {
				continue
			}
			d = filepath.Clean(d)
			if !slices.Contains(dirs, d) {
				dirs = append(dirs, d)
			}
		}
	}
	glob := func(pattern string) []string {
		m, err := env.Glob(filepath.Join(env.Root, pattern))
		if err != nil {
			return nil
		}
		slices.Sort(m)
		slices.Reverse(m) // newest version first: cuda-12.4 before cuda-11.8
		return m
	}
	add(strings.Split(env.Getenv("LD_LIBRARY_PATH"), ":")...)
	for _, d := range []string{"usr/lib/x86_64-linux-gnu", "usr/lib/aarch64-linux-gnu", "usr/lib64", "usr/lib",
		"usr/lib/wsl/lib", "usr/local/nvidia/lib64", "usr/local/nvidia/lib"} {
		add(filepath.Join(env.Root, d))
	}
	for _, v := range []string{"CUDA_PATH", "CUDA_HOME"} {
		if p := env.Getenv(v); p != "" {
			add(filepath.Join(p, "lib64"), filepath.Join(p, "lib"))
		}
	}
	add(filepath.Join(env.Root, "usr/local/cuda/lib64"))
	add(glob("usr/local/cuda-*/lib64")...)
	if venv := env.Getenv("VIRTUAL_ENV"); venv != "" {
		m, _ := env.Glob(filepath.Join(venv, "lib/python3*/site-packages/nvidia/*/lib"))
		slices.Sort(m)
		add(m...)
	}
	for _, pat := range []string{
		"usr/local/lib/python3*/dist-packages/nvidia/*/lib",
		"usr/local/lib/python3*/site-packages/nvidia/*/lib",
		"usr/lib/python3*/dist-packages/nvidia/*/lib",
		"usr/lib/python3*/site-packages/nvidia/*/lib",
		"opt/conda/lib/python3*/site-packages/nvidia/*/lib",
		"root/.local/lib/python3*/site-packages/nvidia/*/lib",
		"home/*/.local/lib/python3*/site-packages/nvidia/*/lib",
		"home/*/*/lib/python3*/site-packages/nvidia/*/lib",
	} {
		add(glob(pat)...)
	}
	return dirs
}

// findLibrary returns the first file named one of names (in order of preference) in
// the first folder of dirs that has one. ok is false when none exists.
func findLibrary(env searchEnv, dirs, names []string) (string, bool) {
	for _, name := range names {
		for _, d := range dirs {
			p := filepath.Join(d, name)
			if env.Exists(p) {
				return p, true
			}
		}
	}
	return "", false
}

// MissingError says which CUDA library was not found (or did not load) and where the
// search looked; its message is the one log line a user sees before forgeflow runs on
// the CPU.
type MissingError struct {
	Library string   // e.g. "libcuda.so.1 (the NVIDIA driver)"
	Looked  []string // folders searched
	Err     error    // a load error, when the file was found but did not load
}

func (e *MissingError) Error() string {
	if e.Err != nil {
		return "cuda: " + e.Library + ": " + e.Err.Error()
	}
	looked := e.Looked
	const most = 12
	more := ""
	if len(looked) > most {
		more = ", …"
		looked = looked[:most]
	}
	return "cuda: " + e.Library + " not found (looked in " + strings.Join(looked, ", ") + more +
		"; set LD_LIBRARY_PATH to its folder)"
}

func (e *MissingError) Unwrap() error { return e.Err }
