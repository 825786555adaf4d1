package cuda

import (
	"bytes"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/gpu"
)

var fakeOut = flag.String("fakecuda", "", "also write the fake libcuda.so.1 into this folder (tools/cuda/emu.sh)")

// buildFakeDriver compiles internal/fakecuda with the kernels into dir/libcuda.so.1.
func buildFakeDriver(t *testing.T, dir string) string {
	t.Helper()
	cxx, err := exec.LookPath("g++")
	if err != nil {
		t.Skipf("no g++ to build the fake CUDA driver: %v", err)
	}
	var inc bytes.Buffer
	common, err := kernelFS.ReadFile("kernels/common.cuh")
	if err != nil {
		t.Fatal(err)
	}
	inc.Write(common)
	var names []string
	for _, m := range modules {
		body, err := kernelFS.ReadFile("kernels/" + string(m) + ".cu")
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&inc, "\n#line 1 \"%s.cu\"\n%s\n", m, body)
		src, _ := moduleSource(m)
		names = append(names, declaredKernels(src)...)
	}
	inc.WriteString("\nstatic std::map<std::string, Kernel>& kernel_table() {\n\tstatic std::map<std::string, Kernel> t = {\n")
	for _, n := range names {
		fmt.Fprintf(&inc, "\t\t{%q, adapt(%s)},\n", n, n)
	}
	inc.WriteString("\t};\n\treturn t;\n}\n")
	for _, f := range []string{"emu.h", "driver.cc"} {
		data, err := os.ReadFile(filepath.Join("internal", "fakecuda", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "kernels.inc"), inc.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	lib := filepath.Join(dir, "libcuda.so.1")
	cmd := exec.Command(cxx, "-std=c++17", "-O1", "-fPIC", "-shared", "-ffp-contract=off", "-Wno-unknown-pragmas",
		"-o", lib, filepath.Join(dir, "driver.cc"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the fake driver: %v\n%s", err, out)
	}
	return lib
}

// TestFakeDriver builds the fake driver, opens the backend on it through the library
// search (a fake root) and runs a few ops against the cpu backend: the bindings, the
// argument marshalling, the dispatch and the kernels' logic, without a GPU. The whole
// op table runs against it with tools/cuda/emu.sh.
func TestFakeDriver(t *testing.T) {
	if testing.Short() && *fakeOut == "" {
		t.Skip("builds a C++ library (~10-30 s); not in -short")
	}
	root := t.TempDir()
	libDir := filepath.Join(root, "usr", "local", "cuda", "lib64")
	if err := os.MkdirAll(libDir, 0o755); err != nil {
		t.Fatal(err)
	}
	lib := buildFakeDriver(t, libDir)
	if *fakeOut != "" {
		data, _ := os.ReadFile(lib)
		if err := os.WriteFile(filepath.Join(*fakeOut, "libcuda.so.1"), data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	env := osSearchEnv()
	env.Root = root
	env.Getenv = func(string) string { return "" }
	be, err := Open(Options{env: &env, CacheDir: defaultCacheDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	if info := be.Info(); !strings.Contains(info.Name, "fake") || info.CC != 80 || info.DriverPath != lib {
		t.Fatalf("info %+v", info)
	}
	dev, err := gpu.New(gpu.Options{Backend: be})
	if err != nil {
		t.Fatal(err)
	}
	cpu, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	randn := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(r.NormFloat64())
		}
		return v
	}
	both := func(f func(rt *gpu.Runtime) (*gpu.Tensor, error)) ([]float32, []float32) {
		t.Helper()
		var out [2][]float32
		for i, rt := range []*gpu.Runtime{dev, cpu} {
			y, err := f(rt)
			if err != nil {
				t.Fatal(err)
			}
			if out[i], err = y.Float32(); err != nil {
				t.Fatal(err)
			}
		}
		return out[0], out[1]
	}
	close := func(name string, got, want []float32, tol float64) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: %d values, want %d", name, len(got), len(want))
		}
		for i := range got {
			d := float64(got[i] - want[i])
			if !(d <= tol*(1+abs(float64(want[i]))) && d >= -tol*(1+abs(float64(want[i])))) {
				t.Fatalf("%s: [%d] = %v, want %v", name, i, got[i], want[i])
			}
		}
	}
	x, w, b := randn(3*40), randn(7*40), randn(7)
	g, c := both(func(rt *gpu.Runtime) (*gpu.Tensor, error) {
		xt, _ := rt.FromFloat32(x, 3, 40)
		raw := make([]byte, 2*len(w))
		gpu.EncodeFloat32(gpu.F16, raw, w)
		wt, err := rt.FromBytes(gpu.F16, raw, 7, 40)
		if err != nil {
			return nil, err
		}
		bt, _ := rt.FromFloat32(b, 7)
		y, err := gpu.Linear(rt, xt, wt, bt)
		if err != nil {
			return nil, err
		}
		return gpu.SiLU(rt, y)
	})
	close("linear-f16+silu", g, c, 1e-5)
	q, k, v := randn(2*2*37*40), randn(2*2*45*40), randn(2*2*45*40)
	g, c = both(func(rt *gpu.Runtime) (*gpu.Tensor, error) {
		qt, _ := rt.FromFloat32(q, 2, 2, 37, 40)
		kt, _ := rt.FromFloat32(k, 2, 2, 45, 40)
		vt, _ := rt.FromFloat32(v, 2, 2, 45, 40)
		return gpu.Attention(rt, qt, kt, vt, nil, gpu.AttentionParams{})
	})
	close("attention-d40", g, c, 1e-5)
	img := randn(2 * 3 * 9 * 7)
	g, c = both(func(rt *gpu.Runtime) (*gpu.Tensor, error) {
		xt, _ := rt.FromFloat32(img, 2, 3, 9, 7)
		wt, _ := rt.FromFloat32(randnSeeded(5*3*3*3), 5, 3, 3, 3)
		y, err := gpu.Conv2D(rt, xt, wt, nil, 1, 1)
		if err != nil {
			return nil, err
		}
		return gpu.GroupNorm(rt, y, 5, nil, nil, 1e-5)
	})
	close("conv+groupnorm", g, c, 1e-4)
	// an op the device declines for its parameters runs on the cpu (staged)
	g, c = both(func(rt *gpu.Runtime) (*gpu.Tensor, error) {
		xt, _ := rt.FromFloat32(img, 2, 3, 9, 7)
		return gpu.Upscale(rt, xt, gpu.UpscaleParams{Width: 11, Height: 5, Method: "bicubic", Crop: "center"})
	})
	close("upscale-bicubic-fallback", g, c, 0)
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

// randnSeeded is a fixed pseudo-random vector (the same on both runtimes).
func randnSeeded(n int) []float32 {
	r := rand.New(rand.NewPCG(7, 7))
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return v
}
