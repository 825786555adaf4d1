//go:build !linux

package cuda

import (
	"errors"
	"runtime"
	"unsafe"
)

var errPlatform = errors.New("cuda: the CUDA backend is built for linux only (this is " + runtime.GOOS + ")")

func openLibrary(env searchEnv, dirs, names []string, what string) (uintptr, string, error) {
	return 0, "", &MissingError{Library: what, Looked: dirs, Err: errPlatform}
}

func bind(h uintptr, lib string, fns map[string]any) error { return errPlatform }

func cString(p unsafe.Pointer) string { return "" }
