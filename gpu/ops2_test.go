package gpu

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/forgeflow/forgeflow/gpu/resample"
	"github.com/forgeflow/forgeflow/internal/dtype"
	"github.com/forgeflow/forgeflow/internal/sleef"
)

// attnRef is naive attention in float64 over (B, H, L, D) row-major values.
func attnRef(q, k, v, mask []float64, mst []int, b, h, lq, lk, d, dv int, scale float64, causal bool) []float64 {
	out := make([]float64, b*h*lq*dv)
	s := make([]float64, lk)
	for bi := 0; bi < b; bi++ {
		for hi := 0; hi < h; hi++ {
			bh := bi*h + hi
			for i := 0; i < lq; i++ {
				for j := 0; j < lk; j++ {
					var dot float64
					for p := 0; p < d; p++ {
						dot += q[(bh*lq+i)*d+p] * k[(bh*lk+j)*d+p]
					}
					s[j] = dot * scale
					if mask != nil {
						s[j] += mask[bi*mst[0]+hi*mst[1]+i*mst[2]+j*mst[3]]
					}
					if causal && j > i {
						s[j] = math.Inf(-1)
					}
				}
				p := softmaxRef(s)
				for c := 0; c < dv; c++ {
					var acc float64
					for j := 0; j < lk; j++ {
						acc += p[j] * v[(bh*lk+j)*dv+c]
					}
					out[(bh*lq+i)*dv+c] = acc
				}
			}
		}
	}
	return out
}

func attnCase(name string, b, h, lq, lk, d, dv int, causal, strided bool, maskShape []int) opCase {
	return opCase{name, func(t *testing.T, rt *Runtime, r *rand.Rand) {
		var q *Tensor
		var qv []float64
		if strided {
			// q as a (B, L, H, D) projection viewed as (B, H, L, D)
			base, bv := randTensor(t, rt, r, false, b, lq, h, d)
			q = ok(t)(Permute(base, 0, 2, 1, 3))
			qv = make([]float64, len(bv))
			for bi := 0; bi < b; bi++ {
				for l := 0; l < lq; l++ {
					for hi := 0; hi < h; hi++ {
						copy(qv[((bi*h+hi)*lq+l)*d:][:d], bv[((bi*lq+l)*h+hi)*d:][:d])
					}
				}
			}
		} else {
			q, qv = randTensor(t, rt, r, false, b, h, lq, d)
		}
		k, kv := randTensor(t, rt, r, false, b, h, lk, d)
		v, vv := randTensor(t, rt, r, false, b, h, lk, dv)
		var m *Tensor
		var mv []float64
		var mst []int
		if maskShape != nil {
			m, mv = randTensor(t, rt, r, false, maskShape...)
			mst = broadcastStrides(nil, m, []int{b, h, lq, lk})
		}
		scale := 1 / math.Sqrt(float64(d))
		want := attnRef(qv, kv, vv, mv, mst, b, h, lq, lk, d, dv, scale, causal)
		got := ok(t)(Attention(rt, q, k, v, m, AttentionParams{Causal: causal}))
		checkClose(t, got, want, 2e-5, 1e-4)
	}}
}

var _ = addCases(OpAttention,
	attnCase("tiny", 1, 2, 5, 5, 8, 8, false, false, nil),
	attnCase("tiles-and-blocks", 2, 3, 300, 290, 16, 12, false, false, nil),
	attnCase("causal", 1, 2, 270, 270, 8, 8, true, false, nil),
	attnCase("causal-masked", 1, 1, 260, 260, 4, 4, true, false, []int{1, 1, 260, 260}),
	attnCase("mask-broadcast", 2, 2, 9, 11, 4, 4, false, false, []int{1, 1, 9, 11}),
	attnCase("key-padding-mask", 2, 3, 7, 10, 6, 5, false, false, []int{2, 1, 1, 10}),
	attnCase("strided-q", 2, 3, 67, 67, 8, 8, false, true, nil),
	attnCase("single-token", 1, 1, 1, 1, 1, 1, false, false, nil),
	// head widths of the two O layouts: a multiple of 32 (O += P·V) and SD's 40 and 80
	// (Oᵀ += Vᵀ·Pᵀ), across several query tiles and key blocks
	attnCase("dv64-tiles", 1, 2, 300, 280, 64, 64, false, false, nil),
	attnCase("dv32-causal-masked", 1, 1, 260, 260, 32, 32, true, false, []int{1, 1, 260, 260}),
	attnCase("dv40-causal-strided", 1, 2, 300, 300, 40, 40, true, true, nil),
	attnCase("dv80-key-mask-strided", 2, 1, 260, 270, 80, 80, false, true, []int{2, 1, 1, 270}),
	opCase{"empty-query", func(t *testing.T, rt *Runtime, r *rand.Rand) {
		q, _ := randTensor(t, rt, r, false, 1, 2, 0, 4)
		k, _ := randTensor(t, rt, r, false, 1, 2, 3, 4)
		checkClose(t, ok(t)(Attention(rt, q, k, k, nil, AttentionParams{})), nil, 0, 0)
	}},
)

func unaryCase(op Op, f func(*Runtime, *Tensor) (*Tensor, error), ref func(float64) float64) opCase {
	return opCase{"random-strided", func(t *testing.T, rt *Runtime, r *rand.Rand) {
		x, xv := randTensor(t, rt, r, true, 3, 5, 7)
		want := make([]float64, len(xv))
		for i, v := range xv {
			want[i] = ref(v * 4) // exercise the tails
		}
		four := ok(t)(rt.FromFloat32([]float32{4}, 1))
		x4 := ok(t)(Mul(rt, x, four))
		checkClose(t, ok(t)(f(rt, x4)), want, 1e-6, 1e-6)
		e, _ := randTensor(t, rt, r, false, 0, 3)
		checkClose(t, ok(t)(f(rt, e)), nil, 0, 0)
		// the second half of a Chunk (GEGLU's gate): rows contiguous, 37 wide (vector
		// tails), spaced 74 apart
		y, yv := randTensor(t, rt, r, false, 5, 74)
		y4 := ok(t)(Mul(rt, y, four))
		parts := ok2(t)(Chunk(y4, 2, -1))
		want = want[:0]
		for i := 0; i < 5; i++ {
			for j := 37; j < 74; j++ {
				want = append(want, ref(yv[i*74+j]*4))
			}
		}
		checkClose(t, ok(t)(f(rt, parts[1])), want, 1e-6, 1e-6)
	}}
}

var (
	_ = addCases(OpGELU, unaryCase(OpGELU, GELU, func(x float64) float64 { return 0.5 * x * (1 + math.Erf(x/math.Sqrt2)) }))
	_ = addCases(OpGELUTanh, unaryCase(OpGELUTanh, GELUTanh, func(x float64) float64 {
		return 0.5 * x * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(x+0.044715*x*x*x)))
	}))
	_ = addCases(OpQuickGELU, unaryCase(OpQuickGELU, QuickGELU, func(x float64) float64 { return x / (1 + math.Exp(-1.702*x)) }))
	_ = addCases(OpSiLU, unaryCase(OpSiLU, SiLU, func(x float64) float64 { return x / (1 + math.Exp(-x)) }))
)

func binaryCases(f func(*Runtime, *Tensor, *Tensor) (*Tensor, error), ref func(a, b float64) float64) []opCase {
	return []opCase{
		{"same-shape", func(t *testing.T, rt *Runtime, r *rand.Rand) {
			a, av := randTensor(t, rt, r, false, 4, 9)
			b, bv := randTensor(t, rt, r, false, 4, 9)
			want := make([]float64, len(av))
			for i := range av {
				want[i] = float64(float32(ref(av[i], bv[i])))
			}
			checkClose(t, ok(t)(f(rt, a, b)), want, 1e-6, 1e-6)
		}},
		{"broadcast-strided", func(t *testing.T, rt *Runtime, r *rand.Rand) {
			a, av := randTensor(t, rt, r, true, 2, 1, 5)
			b, bv := randTensor(t, rt, r, true, 3, 1)
			want := make([]float64, 2*3*5)
			for i := 0; i < 2; i++ {
				for j := 0; j < 3; j++ {
					for k := 0; k < 5; k++ {
						want[(i*3+j)*5+k] = ref(av[i*5+k], bv[j])
					}
				}
			}
			got := ok(t)(f(rt, a, b))
			if s := got.Shape(); len(s) != 3 || s[0] != 2 || s[1] != 3 || s[2] != 5 {
				t.Fatalf("shape %v", s)
			}
			checkClose(t, got, want, 1e-6, 1e-6)
		}},
		{"column-broadcast", func(t *testing.T, rt *Runtime, r *rand.Rand) {
			a, av := randTensor(t, rt, r, false, 4, 9)
			b, bv := randTensor(t, rt, r, false, 4, 1)
			want := make([]float64, 36)
			for i := range want {
				want[i] = ref(av[i], bv[i/9])
			}
			checkClose(t, ok(t)(f(rt, a, b)), want, 1e-6, 1e-6)
		}},
		{"scalar-and-empty", func(t *testing.T, rt *Runtime, r *rand.Rand) {
			a, av := randTensor(t, rt, r, false, 7)
			s, sv := randTensor(t, rt, r, false, 1)
			want := make([]float64, 7)
			for i := range want {
				want[i] = ref(sv[0], av[i])
			}
			checkClose(t, ok(t)(f(rt, s, a)), want, 1e-6, 1e-6)
			e, _ := randTensor(t, rt, r, false, 0, 7)
			checkClose(t, ok(t)(f(rt, e, a)), nil, 0, 0)
			if _, err := f(rt, a, ok(t)(rt.Zeros(F32, 3))); err == nil {
				t.Fatal("shapes 7 and 3 broadcast")
			}
		}},
	}
}

var (
	_ = addCases(OpAdd, binaryCases(Add, func(a, b float64) float64 { return a + b })...)
	_ = addCases(OpSub, binaryCases(Sub, func(a, b float64) float64 { return a - b })...)
	_ = addCases(OpMul, binaryCases(Mul, func(a, b float64) float64 { return a * b })...)
	_ = addCases(OpDiv, binaryCases(Div, func(a, b float64) float64 { return a / b })...)
)

var _ = addCases(OpConcat,
	opCase{"dims-and-strided", func(t *testing.T, rt *Runtime, r *rand.Rand) {
		a, av := randTensor(t, rt, r, false, 2, 3, 4)
		b, bv := randTensor(t, rt, r, true, 2, 1, 4)
		e, _ := randTensor(t, rt, r, false, 2, 0, 4)
		got := ok(t)(Concat(rt, 1, a, e, b))
		var want []float64
		for i := 0; i < 2; i++ {
			want = append(want, av[i*12:(i+1)*12]...)
			want = append(want, bv[i*4:(i+1)*4]...)
		}
		checkClose(t, got, want, 0, 0)
		got0 := ok(t)(Concat(rt, 0, a, a))
		checkClose(t, got0, append(append([]float64{}, av...), av...), 0, 0)
		c, cv := randTensor(t, rt, r, true, 2, 3, 2)
		gotL := ok(t)(Concat(rt, -1, a, c))
		want = want[:0]
		for i := 0; i < 6; i++ {
			want = append(want, av[i*4:(i+1)*4]...)
			want = append(want, cv[i*2:(i+1)*2]...)
		}
		checkClose(t, gotL, want, 0, 0)
	}},
)

var _ = addCases(OpRoPE,
	opCase{"table-broadcast", func(t *testing.T, rt *Runtime, r *rand.Rand) {
		const b, h, l, d = 2, 3, 5, 8
		x, xv := randTensor(t, rt, r, true, b, h, l, d)
		for _, pb := range []int{1, b} {
			pe, pv := randTensor(t, rt, r, false, pb, 1, l, d/2, 2, 2)
			want := make([]float64, len(xv))
			for bi := 0; bi < b; bi++ {
				for hi := 0; hi < h; hi++ {
					for li := 0; li < l; li++ {
						row := ((bi*h+hi)*l + li) * d
						tab := ((bi%pb)*l + li) * d * 2
						for k := 0; k < d/2; k++ {
							x0, x1 := xv[row+2*k], xv[row+2*k+1]
							tt := pv[tab+4*k:]
							want[row+2*k] = tt[0]*x0 + tt[1]*x1
							want[row+2*k+1] = tt[2]*x0 + tt[3]*x1
						}
					}
				}
			}
			checkClose(t, ok(t)(RoPE(rt, x, pe)), want, 1e-6, 1e-6)
		}
	}},
	opCase{"freqs-rotate", func(t *testing.T, rt *Runtime, r *rand.Rand) {
		// a rotation by RoPEFreqs keeps each pair's norm and turns it by pos·ω
		ids := ok(t)(rt.FromFloat32([]float32{0, 3, 1, 7, 2, 11}, 1, 3, 2))
		pe := ok(t)(RoPEFreqs(rt, ids, []int{2, 4}, 10000))
		x := ok(t)(rt.FromFloat32([]float32{1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0}, 1, 1, 3, 6))
		// axis 0 (dim 2): ω = 1; axis 1 (dim 4): ω_j = 10000^(−j/2) for j = 0, 1
		var want []float64
		for _, p := range [][2]float64{{0, 3}, {1, 7}, {2, 11}} {
			want = append(want, math.Cos(p[0]), math.Sin(p[0]))
			for j := 0; j < 2; j++ {
				a := p[1] / math.Pow(10000, float64(j)/2)
				want = append(want, math.Cos(a), math.Sin(a))
			}
		}
		checkClose(t, ok(t)(RoPE(rt, x, pe)), want, 1e-6, 1e-6)
	}},
)

var _ = addCases(OpTimestepEmbedding,
	opCase{"unet-and-flux", func(t *testing.T, rt *Runtime, r *rand.Rand) {
		ts := []float32{0, 1, 999, 500.5, 0.25}
		x := ok(t)(rt.FromFloat32(ts, len(ts)))
		for _, p := range []TimestepParams{{Dim: 320}, {Dim: 7}, {Dim: 256, Scale: 1000}, {Dim: 1}} {
			half := p.Dim / 2
			scale := p.Scale
			if scale == 0 {
				scale = 1
			}
			var want []float64
			for _, tv := range ts {
				row := make([]float64, p.Dim)
				for j := 0; j < half; j++ {
					// PyTorch's float32 chain: (float32(-ln 10000)·j)/half, then torch.exp,
					// which is SLEEF's expf (internal/sleef)
					e := float32(float32(-math.Log(10000))*float32(j)) / float32(half)
					f := sleef.Expf(e)
					a := float64(float32(float32(scale*float64(tv)) * f))
					row[j], row[half+j] = math.Cos(a), math.Sin(a)
				}
				want = append(want, row...)
			}
			checkClose(t, ok(t)(TimestepEmbedding(rt, x, p)), want, 2e-6, 0)
		}
	}},
)

func patchRef(xv []float64, b, c, h, w, p int) []float64 {
	out := make([]float64, len(xv))
	for bi := 0; bi < b; bi++ {
		for ci := 0; ci < c; ci++ {
			for y := 0; y < h; y++ {
				for x := 0; x < w; x++ {
					tok := (y/p)*(w/p) + x/p
					feat := (ci*p+y%p)*p + x%p
					out[(bi*(h/p)*(w/p)+tok)*c*p*p+feat] = xv[((bi*c+ci)*h+y)*w+x]
				}
			}
		}
	}
	return out
}

var _ = addCases(OpPatchify,
	opCase{"2x2-strided", func(t *testing.T, rt *Runtime, r *rand.Rand) {
		x, xv := randTensor(t, rt, r, true, 2, 3, 4, 6)
		checkClose(t, ok(t)(Patchify(rt, x, 2)), patchRef(xv, 2, 3, 4, 6, 2), 0, 0)
		if _, err := Patchify(rt, x, 4); err == nil {
			t.Fatal("patch 4 of width 6 accepted")
		}
	}},
)

var _ = addCases(OpUnpatchify,
	opCase{"roundtrip", func(t *testing.T, rt *Runtime, r *rand.Rand) {
		x, xv := randTensor(t, rt, r, false, 2, 3, 4, 6)
		tok := ok(t)(Patchify(rt, x, 2))
		checkClose(t, ok(t)(Unpatchify(rt, tok, 2, 4, 6)), xv, 0, 0)
		if _, err := Unpatchify(rt, tok, 2, 6, 6); err == nil {
			t.Fatal("wrong grid accepted")
		}
	}},
)

var _ = addCases(OpUpscale,
	opCase{"strided-bilinear-and-crop", func(t *testing.T, rt *Runtime, r *rand.Rand) {
		x, xv := randTensor(t, rt, r, true, 2, 3, 5, 7)
		flat := make([]float32, len(xv))
		for i, v := range xv {
			flat[i] = float32(v)
		}
		for _, m := range []string{"bilinear", "area", "nearest-exact", "bicubic", "bislerp"} {
			want, err := resample.Upscale(flat, 2, 3, 5, 7, 9, 4, m, "center")
			if err != nil {
				t.Fatal(err)
			}
			checkClose(t, ok(t)(Upscale(rt, x, UpscaleParams{Width: 9, Height: 4, Method: m, Crop: "center"})), f64(want), 0, 0)
		}
		if _, err := Upscale(rt, x, UpscaleParams{Width: 9, Height: 4, Method: "bogus", Crop: "disabled"}); err == nil {
			t.Fatal("bogus method accepted")
		}
	}},
)

var _ = addCases(OpEmbedding,
	opCase{"f16-and-f32-tables", func(t *testing.T, rt *Runtime, r *rand.Rand) {
		const v, d = 11, 5
		vals := randData(r, v*d)
		ids := []int{3, 0, 10, 3}
		for _, dt := range []DType{F32, F16, BF16} {
			tab, tv := weightOf(t, rt, dt, vals, v, d)
			var want []float64
			for _, id := range ids {
				want = append(want, tv[id*d:(id+1)*d]...)
			}
			checkClose(t, ok(t)(Embedding(rt, tab, ids)), want, 0, 0)
			checkClose(t, ok(t)(Embedding(rt, tab, nil)), nil, 0, 0)
			if _, err := Embedding(rt, tab, []int{v}); err == nil {
				t.Fatal("id past the table accepted")
			}
		}
	}},
	opCase{"q4_0-table", func(t *testing.T, rt *Runtime, r *rand.Rand) {
		// A GGUF text encoder's token embedding stays quantized: rows decode one by one.
		const v, d = 7, 64
		raw := make([]byte, v*d/32*18)
		want := make([]float64, v*d)
		for blk := 0; blk < v*d/32; blk++ {
			h := dtype.F32ToF16(float32(0.01 + r.Float64()*0.05))
			raw[blk*18], raw[blk*18+1] = byte(h), byte(h>>8)
			for i := 0; i < 16; i++ {
				b := byte(r.IntN(256))
				raw[blk*18+2+i] = b
				want[blk*32+i] = float64(dtype.F16ToF32(h)) * float64(int(b&15)-8)
				want[blk*32+i+16] = float64(dtype.F16ToF32(h)) * float64(int(b>>4)-8)
			}
		}
		tab := ok(t)(rt.FromBytes(Q4_0, raw, v, d))
		ids := []int{6, 0, 6, 2}
		var rows []float64
		for _, id := range ids {
			rows = append(rows, want[id*d:(id+1)*d]...)
		}
		checkClose(t, ok(t)(Embedding(rt, tab, ids)), rows, 0, 0)
	}},
)
