package main

import (
	"fmt"
	"os"
	"testing"
)

// TestMain gives the tests, and the forgeflow processes they start, a cache folder of
// their own: --gemm-blocking auto (the default) and --bf16 auto keep their calibrations
// under os.UserCacheDir, which must not be the user's while tests run.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "forgeflow-test-cache-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Setenv("XDG_CACHE_HOME", dir) // os.UserCacheDir on Linux
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
