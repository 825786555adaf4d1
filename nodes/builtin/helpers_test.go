package builtin

import (
	"context"
	"math"
	"strings"
	"sync"
	"testing"

	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/nodes"
)

// run executes one node class of a fresh registry with the given inputs.
func run(t *testing.T, opts Options, env *nodes.Env, class string, in nodes.Inputs) (nodes.Result, error) {
	t.Helper()
	r := newTestRegistry(t, opts)
	n, err := r.Lookup(class)
	if err != nil {
		t.Fatal(err)
	}
	if env == nil {
		env = &nodes.Env{}
	}
	res, err := n.Run(context.Background(), env, in)
	if err == nil && len(res.Outputs) != len(n.Schema().Outputs) {
		t.Fatalf("%s returned %d outputs, schema has %d", class, len(res.Outputs), len(n.Schema().Outputs))
	}
	return res, err
}

// cpuRuntime is the tensor runtime of the tests' latents and models, made once per
// test binary (production gets its runtime from cmd/ through Options.Runtime).
var cpuRuntime = sync.OnceValues(func() (*gpu.Runtime, error) { return gpu.New(gpu.Options{}) })

// testRuntime returns cpuRuntime.
func testRuntime(t testing.TB) *gpu.Runtime {
	t.Helper()
	rt, err := cpuRuntime()
	if err != nil {
		t.Fatal(err)
	}
	return rt
}

// mustRun is run, with the test runtime, that fails the test on error.
func mustRun(t *testing.T, class string, in nodes.Inputs) nodes.Result {
	t.Helper()
	res, err := run(t, Options{Runtime: testRuntime(t)}, nil, class, in)
	if err != nil {
		t.Fatalf("%s: %v", class, err)
	}
	return res
}

// img builds an image from per-pixel values, [B][H][W][C] flattened.
func img(b, h, w, c int, pix ...float32) *Image {
	if len(pix) != b*h*w*c {
		panic("img: wrong pixel count")
	}
	return &Image{Batch: b, Height: h, Width: w, Channels: c, Pix: pix}
}

// ramp returns an image whose values are i/len (distinct per element).
func ramp(b, h, w, c int) *Image {
	im, _ := NewImage(b, h, w, c)
	for i := range im.Pix {
		im.Pix[i] = float32(i) / float32(len(im.Pix))
	}
	return im
}

// filled returns an image with every value v.
func filled(b, h, w, c int, v float32) *Image {
	im, _ := NewImage(b, h, w, c)
	for i := range im.Pix {
		im.Pix[i] = v
	}
	return im
}

func near(a, b, tol float64) bool { return math.Abs(a-b) <= tol }

// checkPix compares pixel values element-wise within tol.
func checkPix(t *testing.T, got, want []float32, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d values, want %d", len(got), len(want))
	}
	bad := 0
	for i := range got {
		if !near(float64(got[i]), float64(want[i]), tol) {
			if bad < 5 {
				t.Errorf("value %d = %v, want %v", i, got[i], want[i])
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d values differ", bad, len(got))
	}
}

func checkShape(t *testing.T, got, want []int) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("shape %v, want %v", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("shape %v, want %v", got, want)
		}
	}
}

func wantErr(t *testing.T, err error, sub string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one containing %q", sub)
	}
	if !strings.Contains(err.Error(), sub) {
		t.Fatalf("error %q does not contain %q", err, sub)
	}
}
