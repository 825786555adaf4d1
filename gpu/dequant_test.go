package gpu

import (
	"encoding/json"
	"hash/fnv"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/forgeflow/forgeflow/internal/dtype"
	"github.com/forgeflow/forgeflow/internal/testenv"
)

// dequantFixture is ComfyUI-GGUF's dequantization of random blocks of every type it
// decodes, under dequant_dtype default (float16), float32 and bfloat16
// (tools/refpeer/gguf_dequant_ref.py; gpu/internal/gemm checks the decoders on it).
const dequantFixture = "internal/gemm/testdata/gguf_dequant_ref.safetensors"

// dequantModes maps the fixture's dequant_dtype names to WithDequantDType's argument.
var dequantModes = map[string]DType{"default": F16, "float32": F32, "bfloat16": BF16}

// readDequantFixture returns the fixture's tensors, its types and its row shape.
func readDequantFixture(t *testing.T) (map[string]testenv.RawTensor, []string, int, int) {
	ts, meta, err := testenv.ReadSafetensors(dequantFixture)
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Rows, Cols int
		Types      map[string]struct{}
	}
	if err := json.Unmarshal([]byte(meta["case"]), &c); err != nil {
		t.Fatal(err)
	}
	return ts, slices.Sorted(maps.Keys(c.Types)), c.Rows, c.Cols
}

// TestDequantDType runs Linear and Embedding with every fixture weight as a runtime
// tensor viewed WithDequantDType on every runtime (the poisoned foreign backend runs
// the rounded ones through the cpu fallback) against ComfyUI-GGUF's values.
func TestDequantDType(t *testing.T) {
	ts, types, n, k := readDequantFixture(t)
	runtimes := runtimesUnderTest(t)
	for _, name := range types {
		d, known := ggufDType(name)
		if !known || !d.IsQuantized() {
			t.Fatalf("fixture type %s is not a runtime block type", name)
		}
		for _, mode := range slices.Sorted(maps.Keys(dequantModes)) {
			t.Run(name+"/"+mode, func(t *testing.T) {
				h := fnv.New64a()
				h.Write([]byte(name + mode))
				r := rand.New(rand.NewPCG(43, h.Sum64()))
				want, err := ts["out."+name+"."+mode].Float32()
				if err != nil {
					t.Fatal(err)
				}
				wv := make([]float64, len(want))
				for i, v := range want {
					wv[i] = float64(v)
				}
				for _, rn := range slices.Sorted(maps.Keys(runtimes)) {
					rt := runtimes[rn]
					stored := ok(t)(rt.FromBytes(d, ts["in."+name+".bytes"].Data, n, k))
					w := ok(t)(stored.WithDequantDType(dequantModes[mode]))
					stored.Release()
					for _, m := range []int{2, 30} {
						x, xv := randTensor(t, rt, r, false, m, k)
						checkClose(t, ok(t)(Linear(rt, x, w, nil)), linearRef(xv, wv, nil, m, n, k), 1e-4, 1e-4)
					}
					checkClose(t, ok(t)(Embedding(rt, w, []int{1, 0, 1})), slices.Concat(wv[k:], wv[:k], wv[k:]), 0, 0)
					w.Release()
				}
			})
		}
	}
}

// TestWithDequantDType checks the views: the arithmetic is kept by reshaped views,
// dropped where a type has none of its own, and only F32, F16 and BF16 are taken.
func TestWithDequantDType(t *testing.T) {
	rt, err := New(Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	q := ok(t)(rt.FromBytes(Q4_0, make([]byte, 4*18), 2, 64))
	if q.DequantDType() != F32 {
		t.Fatalf("a fresh tensor decodes in %s", q.DequantDType())
	}
	h := ok(t)(q.WithDequantDType(F16))
	if h.DequantDType() != F16 || h.Buffer() != q.Buffer() {
		t.Fatalf("view: %s, shares storage %v", h.DequantDType(), h.Buffer() == q.Buffer())
	}
	if v := ok(t)(Reshape(rt, h, 1, 2, 64)); v.DequantDType() != F16 {
		t.Fatalf("a reshaped view decodes in %s", v.DequantDType())
	}
	for _, d := range []DType{F32, TQ2_0} {
		nb, err := d.StorageBytes(256)
		if err != nil {
			t.Fatal(err)
		}
		x := ok(t)(rt.FromBytes(d, make([]byte, nb), 1, 256))
		if v := ok(t)(x.WithDequantDType(BF16)); v.DequantDType() != F32 {
			t.Fatalf("%s has no block arithmetic, yet decodes in %s", d, v.DequantDType())
		}
	}
	if _, err := q.WithDequantDType(Q8_0); err == nil {
		t.Fatal("a Q8_0 arithmetic was accepted")
	}
}

// TestMXFP4Linear runs Linear with random MXFP4 blocks against internal/dtype's
// decoding of the same bytes on every runtime.
func TestMXFP4Linear(t *testing.T) {
	const n, k = 3, 64
	r := rand.New(rand.NewPCG(45, 46))
	raw := make([]byte, n*k/32*17)
	for i := range raw {
		raw[i] = byte(r.Uint32())
	}
	for b := 0; b < len(raw)/17; b++ {
		raw[17*b] = byte(120 + r.IntN(16)) // shared exponents near 2⁰
	}
	wf := make([]float32, n*k)
	dtype.DecodeMXFP4(wf, raw)
	wv := make([]float64, len(wf))
	for i, v := range wf {
		wv[i] = float64(v)
	}
	runtimes := runtimesUnderTest(t)
	for _, rn := range slices.Sorted(maps.Keys(runtimes)) {
		rt := runtimes[rn]
		w := ok(t)(rt.FromBytes(MXFP4, raw, n, k))
		x, xv := randTensor(t, rt, r, false, 5, k)
		checkClose(t, ok(t)(Linear(rt, x, w, nil)), linearRef(xv, wv, nil, 5, n, k), 1e-5, 1e-5)
	}
}
