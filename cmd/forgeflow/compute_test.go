package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/gpu"
)

// TestComputeFlags maps FORGEFLOW_BF16, FORGEFLOW_GEMM, --bf16 and --gemm onto
// gpu.Options: the flag wins over the variable, and a bad value of either is an error.
func TestComputeFlags(t *testing.T) {
	cache := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", cache) // os.UserCacheDir on Linux
	cases := []struct {
		name     string
		env      map[string]string
		args     []string
		bf16     gpu.BF16Mode
		gemm     string
		blocking string // "" expects the default, auto (which keeps its decision in the cache folder)
		cacheDir string
		parseErr bool
		optErr   string
	}{
		{name: "defaults", bf16: gpu.BF16Off},
		{name: "env on", env: map[string]string{envBF16: "1"}, bf16: gpu.BF16On},
		{name: "env auto", env: map[string]string{envBF16: "auto"}, bf16: gpu.BF16Auto, cacheDir: filepath.Join(cache, "forgeflow")},
		{name: "flag over env", env: map[string]string{envBF16: "on"}, args: []string{"--bf16=off"}, bf16: gpu.BF16Off},
		{name: "flag auto", args: []string{"--bf16", "auto"}, bf16: gpu.BF16Auto, cacheDir: filepath.Join(cache, "forgeflow")},
		{name: "bad env", env: map[string]string{envBF16: "fast"}, optErr: "FORGEFLOW_BF16=fast"},
		{name: "bad env, good flag", env: map[string]string{envBF16: "fast"}, args: []string{"--bf16=on"}, bf16: gpu.BF16On},
		{name: "bad flag", args: []string{"--bf16=fast"}, parseErr: true},
		{name: "env gemm", env: map[string]string{envGEMM: "generic"}, gemm: "generic"},
		{name: "flag gemm over env", env: map[string]string{envGEMM: "generic"}, args: []string{"--gemm", "avx2"}, gemm: "avx2"},
		{name: "env blocking auto", env: map[string]string{envBlocking: "auto"}, blocking: gpu.BlockingAuto, cacheDir: filepath.Join(cache, "forgeflow")},
		{name: "flag blocking over env", env: map[string]string{envBlocking: "auto"}, args: []string{"--gemm-blocking", "fixed"}, blocking: gpu.BlockingFixed},
		{name: "flag blocking derived", args: []string{"--gemm-blocking=derived"}, blocking: gpu.BlockingDerived},
		{name: "bad blocking", args: []string{"--gemm-blocking=fast"}, optErr: `gemm-blocking "fast"`},
		{name: "bad env blocking", env: map[string]string{envBlocking: "tuned"}, optErr: `gemm-blocking "tuned"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var c computeFlags
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			c.register(fs, func(k string) string { return tc.env[k] })
			if err := fs.Parse(tc.args); (err != nil) != tc.parseErr {
				t.Fatalf("parse: %v", err)
			}
			if tc.parseErr {
				return
			}
			o, err := c.options(nil)
			if tc.optErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.optErr) {
					t.Fatalf("options error %v, want %q", err, tc.optErr)
				}
				return
			}
			blocking, cacheDir := tc.blocking, tc.cacheDir
			if blocking == "" || blocking == gpu.BlockingAuto {
				blocking, cacheDir = gpu.BlockingAuto, filepath.Join(cache, "forgeflow")
			}
			if err != nil || o.BF16 != tc.bf16 || o.GEMM != tc.gemm || o.Blocking != blocking || o.CacheDir != cacheDir {
				t.Fatalf("options %+v (%v), want bf16 %v gemm %q blocking %q cache %q", o, err, tc.bf16, tc.gemm, blocking, cacheDir)
			}
		})
	}
}

// TestComputeFlagsReachRuntime: the GEMM path given by the variable or the flag is the
// one the runtime runs (bench reports it), and an unknown one stops the command.
func TestComputeFlagsReachRuntime(t *testing.T) {
	ckpt := filepath.Join(t.TempDir(), "tiny.safetensors")
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"synth", "--family", "sd15-tiny", "--out", ckpt}, &out, &errb); code != exitOK {
		t.Fatalf("synth exit %d: %s", code, errb.String())
	}
	bench := func(args ...string) (benchResult, int) {
		out.Reset()
		errb.Reset()
		code := run(context.Background(), append([]string{"bench", "unet", "--ckpt", ckpt, "--width", "64", "--height", "64", "--runs", "1", "--json"}, args...), &out, &errb)
		var r benchResult
		if code == exitOK {
			if err := json.Unmarshal(out.Bytes(), &r); err != nil {
				t.Fatalf("bench output %q: %v", out.String(), err)
			}
		}
		return r, code
	}
	if r, code := bench("--gemm", "generic", "--bf16", "on"); code != exitOK || r.GEMM != "generic" || r.BF16 {
		t.Fatalf("--gemm generic --bf16 on: exit %d, gemm %q bf16 %v (%s): the generic path has no bfloat16 kernel", code, r.GEMM, r.BF16, errb.String())
	}
	// The blocking: derived by default in tests, fixed on request (the constants of the
	// avx2 kernel: 384, 144, 1024), reported by bench.
	if r, code := bench("--gemm", "avx2", "--gemm-blocking", "fixed"); code == exitOK && r.Blocking != [3]int{384, 144, 1024} {
		t.Fatalf("--gemm-blocking fixed: blocking %v", r.Blocking)
	} else if code != exitOK && !strings.Contains(errb.String(), "lacks AVX2") {
		t.Fatalf("--gemm avx2 --gemm-blocking fixed: exit %d (%s)", code, errb.String())
	}
	if r, code := bench(); code != exitOK || r.Blocking[0] <= 0 || r.Blocking[1] <= 0 || r.Blocking[2] <= 0 {
		t.Fatalf("default blocking: exit %d, blocking %v (%s)", code, r.Blocking, errb.String())
	}
	t.Setenv(envGEMM, "generic")
	if r, code := bench(); code != exitOK || r.GEMM != "generic" {
		t.Fatalf("FORGEFLOW_GEMM=generic: exit %d, gemm %q (%s)", code, r.GEMM, errb.String())
	}
	t.Setenv(envGEMM, "bogus")
	if _, code := bench(); code != exitFailed || !strings.Contains(errb.String(), `unknown path "bogus"`) {
		t.Fatalf("FORGEFLOW_GEMM=bogus: exit %d: %s", code, errb.String())
	}
}
