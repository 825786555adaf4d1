package cuda

import (
	"slices"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/gpu"
)

// TestOpKernels is the device side of the closed-list check: every op has device
// kernels or a declared reason to run on the CPU, and every kernel named is defined in
// its module's source.
func TestOpKernels(t *testing.T) {
	defined := map[module][]string{}
	for _, m := range modules {
		src, err := moduleSource(m)
		if err != nil {
			t.Fatal(err)
		}
		defined[m] = declaredKernels(src)
		if len(defined[m]) == 0 {
			t.Errorf("module %s defines no kernel", m)
		}
	}
	for op := gpu.Op(0); op < gpu.OpCount; op++ {
		ks, hasKernel := opKernels[op]
		reason, cpu := cpuOnly[op]
		switch {
		case hasKernel && cpu:
			t.Errorf("op %s has kernels and is declared cpu-only", op)
		case !hasKernel && !cpu:
			t.Errorf("op %s has no cuda kernel and no declared cpu fallback", op)
		case cpu && reason == "":
			t.Errorf("op %s: cpu-only without a reason", op)
		}
		for _, k := range ks {
			if !slices.Contains(defined[k.mod], k.name) {
				t.Errorf("op %s: kernel %s is not defined in %s.cu", op, k.name, k.mod)
			}
		}
		if r, ok := partialOps[op]; ok && (r == "" || !hasKernel) {
			t.Errorf("op %s: partial support needs kernels and a description", op)
		}
	}
}

// TestKernelsCompile compiles every module with the NVRTC found on this machine (no GPU
// is needed to compile) for an Ampere target; the device compiles for its own. It skips
// where no NVRTC is installed (Debian's libnvrtc11.2 from non-free, or a PyTorch wheel's
// nvidia/cuda_nvrtc, is enough). Results go through the kernel cache in the user's cache
// folder, keyed by the source's hash: a module compiles again only when it changed, which
// keeps the test at a few milliseconds after the first run (NVRTC takes ~10 s a module).
func TestKernelsCompile(t *testing.T) {
	env := osSearchEnv()
	nv, err := loadNVRTC(env, searchDirs(env))
	if err != nil {
		t.Skipf("no NVRTC to compile the kernels with: %v", err)
	}
	t.Logf("nvrtc %s at %s", nv.Version(), nv.path)
	cache := kernelCache{dir: defaultCacheDir()}
	for _, m := range modules {
		src, err := moduleSource(m)
		if err != nil {
			t.Fatal(err)
		}
		for _, cc := range []int{80} {
			key := cacheKey{Module: m, SourceHash: sourceHash(src), CC: cc, NVRTC: nv.Version()}
			if _, ok := cache.load(key); ok {
				continue
			}
			img, err := nv.compile(src, string(m)+".cu", cc)
			if err == nil {
				_ = cache.store(key, img)
			}
			if err != nil {
				t.Fatalf("%s for sm_%d: %v", m, cc, err)
			}
			if len(img.Data) == 0 {
				t.Fatalf("%s: empty image", m)
			}
			if img.PTX {
				for _, k := range declaredKernels(src) {
					if !strings.Contains(string(img.Data), ".entry "+k) {
						t.Errorf("%s: PTX lacks entry %s", m, k)
					}
				}
			}
		}
	}
}
