package cuda

import (
	"fmt"
	"unsafe"

	"github.com/ebitengine/purego"
)

// openLibrary loads the first library of names found in dirs, else by soname through the
// dynamic loader's own search (ld.so.cache), which knows folders that no list here does.
func openLibrary(env searchEnv, dirs, names []string, what string) (uintptr, string, error) {
	if p, ok := findLibrary(env, dirs, names); ok {
		h, err := purego.Dlopen(p, purego.RTLD_NOW|purego.RTLD_GLOBAL)
		if err != nil {
			return 0, p, &MissingError{Library: what + " at " + p, Looked: dirs, Err: err}
		}
		return h, p, nil
	}
	for _, n := range names {
		if h, err := purego.Dlopen(n, purego.RTLD_NOW|purego.RTLD_GLOBAL); err == nil {
			return h, n, nil
		}
	}
	return 0, "", &MissingError{Library: what, Looked: append(dirs, "the dynamic loader's cache")}
}

// bind fills each function pointer of fns (name → pointer to a func variable) from the
// library handle h. A missing symbol is an error naming it: an old driver lacks newer
// entry points, and a clear message beats a crash.
func bind(h uintptr, lib string, fns map[string]any) error {
	for name, fp := range fns {
		sym, err := purego.Dlsym(h, name)
		if err != nil || sym == 0 {
			return fmt.Errorf("cuda: %s has no symbol %s (too old?)", lib, name)
		}
		purego.RegisterFunc(fp, sym)
	}
	return nil
}

// cString reads a NUL-terminated C string of at most 1024 bytes at p.
func cString(p unsafe.Pointer) string {
	if p == nil {
		return ""
	}
	var b []byte
	for i := 0; i < 1024; i++ {
		c := *(*byte)(unsafe.Add(p, i))
		if c == 0 {
			break
		}
		b = append(b, c)
	}
	return string(b)
}
