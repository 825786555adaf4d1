package gemm

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/internal/dtype"
	"github.com/forgeflow/forgeflow/internal/testenv"
)

// scaleOffsets are the byte offsets of each block type's fp16 scales (the MXFP4
// exponent byte aside), which randomBlocks keeps finite and moderate.
var scaleOffsets = map[DType][]int{
	Q8_0: {0}, Q4_0: {0}, Q4_1: {0, 2}, Q5_0: {0}, Q5_1: {0, 2}, Q2_K: {80, 82}, Q3_K: {108},
	Q4_K: {0, 2}, Q5_K: {0, 2}, Q6_K: {208}, IQ4_NL: {0}, IQ4_XS: {0}, TQ1_0: {52}, TQ2_0: {64},
}

// randomBlocks fills n rows of k elements of d with random bytes, its block scales set
// to random normal fp16 values (MXFP4's shared exponent near 2⁰), so that every quant
// and sub-scale bit pattern occurs and the values stay finite.
func randomBlocks(r *rand.Rand, d DType, n, k int) []byte {
	rb, err := d.RowBytes(k)
	if err != nil {
		panic(err)
	}
	data := make([]byte, n*rb)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	bb := d.BlockBytes()
	for b := 0; b < len(data)/bb; b++ {
		blk := data[b*bb : (b+1)*bb]
		if d.Base() == MXFP4 {
			blk[0] = byte(120 + r.IntN(16))
			continue
		}
		for _, off := range scaleOffsets[d.Base()] {
			binary.LittleEndian.PutUint16(blk[off:], dtype.F32ToF16(float32(r.NormFloat64()/16)))
		}
	}
	return data
}

// decodeRef decodes whole rows of d with internal/dtype directly, not through a path.
func decodeRef(d DType, dst []float32, src []byte) {
	r := d.Math().rounding()
	fns := map[DType]func([]float32, []byte){
		Q8_0: r.DecodeQ8_0, Q4_0: r.DecodeQ4_0, Q4_1: r.DecodeQ4_1, Q5_0: r.DecodeQ5_0, Q5_1: r.DecodeQ5_1,
		Q2_K: r.DecodeQ2_K, Q3_K: r.DecodeQ3_K, Q4_K: r.DecodeQ4_K, Q5_K: r.DecodeQ5_K, Q6_K: r.DecodeQ6_K,
		IQ4_NL: r.DecodeIQ4_NL, IQ4_XS: r.DecodeIQ4_XS, TQ1_0: dtype.DecodeTQ1_0, TQ2_0: dtype.DecodeTQ2_0,
		MXFP4: dtype.DecodeMXFP4,
	}
	fns[d.Base()](dst, src)
}

// moreTypes are the base types of quants_more.go and every rounded decoding.
func moreTypes(t *testing.T) []DType {
	ds := []DType{IQ4_NL, IQ4_XS, TQ1_0, TQ2_0, MXFP4}
	for _, m := range []Math{MathF16, MathBF16} {
		for _, b := range []DType{Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS} {
			d, err := b.WithMath(m)
			if err != nil {
				t.Fatal(err)
			}
			ds = append(ds, d)
		}
	}
	return ds
}

// TestLinearMoreTypes runs Linear with the IQ4, ternary, MXFP4 and rounded weights on
// every path and blocking, through the few-row and the packed products, with rows further
// apart than their size, against the float64 product
// with the weight internal/dtype decodes.
func TestLinearMoreTypes(t *testing.T) {
	r := rand.New(rand.NewPCG(61, 62))
	for _, e := range enginesUnderTest(t) {
		for _, d := range moreTypes(t) {
			for _, sh := range []shape{{1, 5, 512}, {3, 33, 768}, {37, 70, 1024}} {
				t.Run(fmt.Sprintf("%s/%s/%dx%dx%d", engineName(e), d, sh.m, sh.n, sh.k), func(t *testing.T) {
					m, n, k := sh.m, sh.n, sh.k
					data := randomBlocks(r, d, n, k)
					wf := make([]float32, n*k)
					decodeRef(d, wf, data)
					rb, _ := d.RowBytes(k)
					w := Weight{DType: d, N: n, K: k, Stride: rb + 7, Data: make([]byte, n*(rb+7))}
					for j := 0; j < n; j++ {
						copy(w.Data[j*w.Stride:], data[j*rb:(j+1)*rb])
					}
					x, y := randSlice(r, m*k), make([]float32, m*n)
					want, mag := refGEMM(false, true, m, n, k, x, k, wf, k, y, n, false)
					if err := e.Linear(m, x, k, w, y, n, false); err != nil {
						t.Fatal(err)
					}
					checkClose(t, m, n, k, y, n, want, mag)
				})
			}
		}
	}
}

// TestWithMath checks which types have rounded decodings, that sizes and names follow
// the base type, and that the roundings differ from float32 and from each other.
func TestWithMath(t *testing.T) {
	for d := DType(0); d < dtypeCount; d++ {
		f32, err := d.WithMath(MathF32)
		if err != nil || f32 != d {
			t.Fatalf("%s.WithMath(float32) = %s, %v", d, f32, err)
		}
		h, err := d.WithMath(MathF16)
		if err != nil {
			t.Fatal(err)
		}
		rounded := !slices.Contains([]DType{F32, F16, BF16, F8E4M3FN, F8E5M2, TQ1_0, TQ2_0, MXFP4}, d)
		if (h != d) != rounded {
			t.Fatalf("%s.WithMath(float16) = %s: rounded decoding %v, want %v", d, h, h != d, rounded)
		}
		if h.Base() != d || h.BlockSize() != d.BlockSize() || h.BlockBytes() != d.BlockBytes() {
			t.Fatalf("%s: base %s, block %d/%d bytes, want %d/%d", h, h.Base(), h.BlockSize(), h.BlockBytes(), d.BlockSize(), d.BlockBytes())
		}
		if rounded && h.String() != d.String()+"@float16" {
			t.Fatalf("name %q", h.String())
		}
	}
	if _, err := Q4_0.WithMath(Math(7)); err == nil {
		t.Fatal("an unknown arithmetic was accepted")
	}
	if _, err := DType(dtypeCount).WithMath(MathF16); err == nil {
		t.Fatal("an unknown dtype was accepted")
	}
	if _, err := (Q4_0 | 7<<mathShift).RowBytes(32); err == nil {
		t.Fatal("RowBytes accepted an unknown arithmetic")
	}
	// A scale and quants whose float32 products are not float16 or bfloat16 values.
	blk := binary.LittleEndian.AppendUint16(nil, dtype.F32ToF16(1+1.0/1024))
	for j := 0; j < 16; j++ {
		blk = append(blk, 0x77)
	}
	var outs [3][32]float32
	for m := MathF32; m <= MathBF16; m++ {
		d, _ := Q4_0.WithMath(m)
		if err := DecodeRow(d, outs[m][:], blk); err != nil {
			t.Fatal(err)
		}
	}
	// (1 + 2⁻¹⁰)·(−1): exact in float32 and float16, rounded to −1 in bfloat16.
	if outs[0][0] != -(1+1.0/1024) || outs[1][0] != outs[0][0] || outs[2][0] != -1 {
		t.Fatalf("q = -1: float32 %g, float16 %g, bfloat16 %g", outs[0][0], outs[1][0], outs[2][0])
	}
}

// TestGoldenGGUFDefaultMath decodes the golden gguf family's raw bytes with float16
// arithmetic on every path and requires ComfyUI-GGUF's default dequantization
// (dequant_dtype "default", out.<tensor>) bit for bit: every block type of the family.
func TestGoldenGGUFDefaultMath(t *testing.T) {
	_, cases := testenv.GoldenCases[ggufSidecar](t, "gguf")
	n := 0
	for _, c := range cases {
		if c.GGUFFile == "" {
			continue
		}
		ts, _, err := testenv.ReadSafetensors(c.Path())
		if err != nil {
			t.Fatal(err)
		}
		names := make([]string, 0, len(c.TensorsInfo))
		for name := range c.TensorsInfo {
			names = append(names, name)
		}
		slices.Sort(names)
		for _, tensor := range names {
			base, known := gemmDType(c.TensorsInfo[tensor].GGMLType)
			if !known {
				t.Fatal(c.FieldError("tensors_info."+tensor+".ggml_type", "%q is not a gemm dtype", c.TensorsInfo[tensor].GGMLType))
			}
			d, err := base.WithMath(MathF16)
			if err != nil {
				t.Fatal(err)
			}
			if d == base {
				continue // a float type: no block arithmetic
			}
			raw, ok := ts["in."+tensor+".bytes"]
			ref, ok2 := ts["out."+tensor]
			if !ok || !ok2 || len(raw.Shape) != 2 {
				t.Fatalf("%s: raw bytes or default dequantization missing", tensor)
			}
			want, err := ref.Float32()
			if err != nil {
				t.Fatal(err)
			}
			n++
			rows, rowBytes := raw.Shape[0], raw.Shape[1]
			k := len(want) / rows
			for _, e := range enginesUnderTest(t) {
				got := make([]float32, k)
				for j := 0; j < rows; j++ {
					e.k.decodeRow(d, got, raw.Data[j*rowBytes:], 0)
					for i, g := range got {
						if w := want[j*k+i]; math.Float32bits(g) != math.Float32bits(w) {
							t.Fatalf("%s %s row %d col %d: %g, want %g", engineName(e), tensor, j, i, g, w)
						}
					}
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("the gguf family has no block-type tensors")
	}
}

// refpeerDequantFile holds ComfyUI-GGUF's dequantization of random blocks of every
// type it decodes, under dequant_dtype default (float16 math), float32 and bfloat16
// (tools/refpeer/gguf_dequant_ref.py).
const refpeerDequantFile = "testdata/gguf_dequant_ref.safetensors"

// refpeerModes maps the fixture's dequant_dtype names to the decoding arithmetic.
var refpeerModes = map[string]Math{"default": MathF16, "float32": MathF32, "bfloat16": MathBF16}

// TestRefpeerDequant decodes the fixture's bytes on every path in each arithmetic and
// requires ComfyUI-GGUF's values bit for bit: IQ4_NL, IQ4_XS, TQ1_0 and TQ2_0 (which the
// golden family lacks) and the bfloat16 arithmetic of every type, then runs Linear with
// each weight.
func TestRefpeerDequant(t *testing.T) {
	ts, meta, err := testenv.ReadSafetensors(refpeerDequantFile)
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
	for _, need := range []DType{IQ4_NL, IQ4_XS, TQ1_0, TQ2_0} {
		if _, ok := c.Types[need.String()]; !ok {
			t.Fatalf("the fixture has no %s", need)
		}
	}
	r := rand.New(rand.NewPCG(63, 64))
	for _, name := range slices.Sorted(maps.Keys(c.Types)) {
		base, ok := gemmDType(name)
		if !ok {
			t.Fatalf("fixture type %s is not a gemm dtype", name)
		}
		raw := ts["in."+name+".bytes"]
		for _, mode := range slices.Sorted(maps.Keys(refpeerModes)) {
			ref, ok := ts["out."+name+"."+mode]
			if !ok {
				t.Fatalf("no out.%s.%s", name, mode)
			}
			want, err := ref.Float32()
			if err != nil {
				t.Fatal(err)
			}
			d, err := base.WithMath(refpeerModes[mode])
			if err != nil {
				t.Fatal(err)
			}
			n, k := c.Rows, c.Cols
			rb, err := d.RowBytes(k)
			if err != nil || rb*n != len(raw.Data) {
				t.Fatalf("%s: %d bytes for %d×%d (%v)", name, len(raw.Data), n, k, err)
			}
			for _, e := range enginesUnderTest(t) {
				t.Run(engineName(e)+"/"+name+"/"+mode, func(t *testing.T) {
					got := make([]float32, k)
					for j := 0; j < n; j++ {
						e.k.decodeRow(d, got, raw.Data[j*rb:], 0)
						for i, g := range got {
							if w := want[j*k+i]; math.Float32bits(g) != math.Float32bits(w) {
								t.Fatalf("row %d col %d: %g, want %g", j, i, g, w)
							}
						}
					}
					for _, m := range []int{2, 30} {
						x, y := randSlice(r, m*k), make([]float32, m*n)
						wantY, mag := refGEMM(false, true, m, n, k, x, k, want, k, y, n, false)
						if err := e.Linear(m, x, k, Weight{DType: d, N: n, K: k, Data: raw.Data}, y, n, false); err != nil {
							t.Fatal(err)
						}
						checkClose(t, m, n, k, y, n, wantY, mag)
					}
				})
			}
		}
	}
}

// BenchmarkLinearMore measures Linear with the IQ4 weights and the rounded decodings
// beside Q4_0 and Q8_0 in float32 arithmetic, at a Flux single block's shape with 512
// tokens (3072 → 3072) and as one-row products, where the decode cost shows.
func BenchmarkLinearMore(b *testing.B) {
	e := benchEngine(b, PathAuto)
	q4h, _ := Q4_0.WithMath(MathF16)
	q8h, _ := Q8_0.WithMath(MathF16)
	q8b, _ := Q8_0.WithMath(MathBF16)
	for _, d := range []DType{Q4_0, q4h, Q8_0, q8h, q8b, IQ4_NL, IQ4_XS} {
		for _, sh := range []shape{{512, 3072, 3072}, {1, 4096, 4096}} {
			b.Run(fmt.Sprintf("%s/%dx%dx%d", strings.ToLower(d.String()), sh.m, sh.n, sh.k), func(b *testing.B) {
				r := rand.New(rand.NewPCG(2, 2))
				w := Weight{DType: d, N: sh.n, K: sh.k, Data: randomBlocks(r, d, sh.n, sh.k)}
				x, y := randSlice(r, sh.m*sh.k), make([]float32, sh.m*sh.n)
				b.ResetTimer()
				cpu := startCPU()
				for b.Loop() {
					if err := e.Linear(sh.m, x, sh.k, w, y, sh.n, false); err != nil {
						b.Fatal(err)
					}
				}
				flops := 2 * float64(sh.m) * float64(sh.n) * float64(sh.k)
				reportGFLOPs(b, flops)
				cpu.report(b, flops*float64(b.N))
			})
		}
	}
}
