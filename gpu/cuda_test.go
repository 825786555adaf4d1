package gpu_test

import (
	"log/slog"
	"os"
	"sync"
	"testing"

	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/gpu/cuda"
)

// The cuda backend joins TestOps (and every test that uses runtimesUnderTest) when a
// device is found; FORGEFLOW_REQUIRE_CUDA=1 (set by `make test-cuda`) turns an absent
// device into a failure instead of a skip.
var cudaRuntime = sync.OnceValues(func() (*gpu.Runtime, string) {
	be, err := cuda.Open(cuda.Options{CacheDir: os.Getenv("FORGEFLOW_CUDA_CACHE")})
	if err != nil {
		return nil, err.Error()
	}
	rt, err := gpu.New(gpu.Options{Backend: be, Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		return nil, err.Error()
	}
	return rt, ""
})

func init() { gpu.AddDeviceRuntime("cuda", cudaRuntime) }

// TestCUDADevice reports whether the op table ran on a CUDA device.
func TestCUDADevice(t *testing.T) {
	rt, why := cudaRuntime()
	if rt == nil {
		if os.Getenv("FORGEFLOW_REQUIRE_CUDA") == "1" {
			t.Fatalf("no CUDA device: %s", why)
		}
		t.Skipf("no CUDA device, the op table ran on the cpu backends only: %s", why)
	}
	info := rt.Backend().(*cuda.Backend).Info()
	t.Logf("cuda device %d: %s, sm_%d, %d SMs, %.1f GiB, driver %d, nvrtc %s", info.Index, info.Name, info.CC, info.SMs,
		float64(info.TotalBytes)/(1<<30), info.DriverVersion, info.NVRTC)
}
