package gpu

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/internal/dtype"
)

// opCase is one cross-backend test: it builds inputs on rt, runs the op and compares
// with a plain float64 reference.
type opCase struct {
	name string
	run  func(t *testing.T, rt *Runtime, r *rand.Rand)
}

// opCases lists the cross-backend cases of every op (TestOpTable requires at least one).
var opCases = map[Op][]opCase{}

func addCases(op Op, cs ...opCase) bool {
	opCases[op] = append(opCases[op], cs...)
	return true
}

// TestOpTable is the closed-list check: every op has a name, a cpu kernel and a case.
func TestOpTable(t *testing.T) {
	for op := Op(0); op < OpCount; op++ {
		name := op.String()
		if opNames[op] == "" || strings.HasPrefix(name, "Op(") {
			t.Errorf("op %d has no name", int(op))
		}
		if cpuKernels[op] == nil {
			t.Errorf("op %s has no cpu kernel", name)
		}
		if len(opCases[op]) == 0 {
			t.Errorf("op %s has no cross-backend test case", name)
		}
	}
	seen := map[string]bool{}
	for _, n := range opNames {
		if seen[n] {
			t.Errorf("duplicate op name %q", n)
		}
		seen[n] = true
	}
}

// TestOps runs every op case on every backend present.
func TestOps(t *testing.T) {
	for bname, rt := range runtimesUnderTest(t) {
		for op := Op(0); op < OpCount; op++ {
			for i, c := range opCases[op] {
				t.Run(bname+"/"+op.String()+"/"+c.name, func(t *testing.T) {
					c.run(t, rt, rand.New(rand.NewPCG(uint64(op), uint64(i))))
				})
			}
		}
	}
}

// --- reference helpers -------------------------------------------------------------

func refMatMul(a, b []float64, batch, m, k, n int, bShared bool) []float64 {
	out := make([]float64, batch*m*n)
	for bi := 0; bi < batch; bi++ {
		bo := bi * k * n
		if bShared {
			bo = 0
		}
		for i := 0; i < m; i++ {
			for j := 0; j < n; j++ {
				var s float64
				for p := 0; p < k; p++ {
					s += a[bi*m*k+i*k+p] * b[bo+p*n+j]
				}
				out[bi*m*n+i*n+j] = s
			}
		}
	}
	return out
}

var _ = addCases(OpCopy,
	opCase{"permuted-3d", func(t *testing.T, rt *Runtime, r *rand.Rand) {
		x, want := randTensor(t, rt, r, true, 3, 5, 7)
		c := ok(t)(Contiguous(rt, x))
		if !c.IsContiguous() {
			t.Fatal("not contiguous")
		}
		checkClose(t, c, want, 0, 0)
	}},
	opCase{"narrowed-4d", func(t *testing.T, rt *Runtime, r *rand.Rand) {
		x, all := randTensor(t, rt, r, false, 2, 3, 4, 5)
		v := ok(t)(Narrow(x, 2, 1, 2))
		var want []float64
		for i := 0; i < 2*3; i++ {
			want = append(want, all[i*20+5:i*20+15]...)
		}
		checkClose(t, ok(t)(Contiguous(rt, v)), want, 0, 0)
	}},
	opCase{"last-two-transposed", func(t *testing.T, rt *Runtime, r *rand.Rand) {
		// (N, C, HW) ↔ (N, HW, C) as the UNet moves between NCHW and tokens: the
		// transposer path, with odd sizes, more than one 256-row chunk and a narrowed
		// source (offset and a stride wider than the extent)
		for _, sh := range [][3]int{{2, 5, 300}, {1, 37, 3}, {3, 300, 17}} {
			n, a, b := sh[0], sh[1], sh[2]
			x, xv := randTensor(t, rt, r, false, n, a, b+2)
			v := ok(t)(Narrow(x, 2, 1, b))
			p := ok(t)(Permute(v, 0, 2, 1)) // (n, b, a), strides (a·(b+2), 1, b+2)
			want := make([]float64, 0, n*a*b)
			for i := 0; i < n; i++ {
				for j := 0; j < b; j++ {
					for k := 0; k < a; k++ {
						want = append(want, xv[(i*a+k)*(b+2)+1+j])
					}
				}
			}
			checkClose(t, ok(t)(Contiguous(rt, p)), want, 0, 0)
		}
		f16 := ok(t)(rt.FromBytes(F16, []byte{1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0}, 2, 3))
		ft := ok(t)(Contiguous(rt, ok(t)(Transpose(f16, 0, 1)))) // 2-byte elements: the plain path
		if got := rawBytes(t, ft); string(got) != string([]byte{1, 0, 4, 0, 2, 0, 5, 0, 3, 0, 6, 0}) {
			t.Fatalf("f16 transpose: % x", got)
		}
	}},
	opCase{"empty", func(t *testing.T, rt *Runtime, r *rand.Rand) {
		x, _ := randTensor(t, rt, r, true, 3, 0, 2)
		checkClose(t, ok(t)(Contiguous(rt, x)), nil, 0, 0)
	}},
)

var _ = addCases(OpCast,
	opCase{"f32-f16-bf16-f8", func(t *testing.T, rt *Runtime, r *rand.Rand) {
		x, want := randTensor(t, rt, r, true, 5, 7)
		for _, d := range []DType{F16, BF16, F8E4M3FN, F8E5M2, F32} {
			c := ok(t)(Cast(rt, x, d))
			back := ok(t)(Cast(rt, c, F32))
			ref := make([]float64, len(want))
			for i, v := range want {
				f := float32(v)
				switch d {
				case F16:
					f = dtype.F16ToF32(dtype.F32ToF16(f))
				case BF16:
					f = dtype.BF16ToF32(dtype.F32ToBF16(f))
				case F8E4M3FN:
					f = dtype.E4M3FNToF32(dtype.F32ToE4M3FN(f))
				case F8E5M2:
					f = dtype.E5M2ToF32(dtype.F32ToE5M2(f))
				}
				ref[i] = float64(f)
			}
			checkClose(t, back, ref, 0, 0)
		}
	}},
)

var _ = addCases(OpMatMul,
	opCase{"1x1x1", func(t *testing.T, rt *Runtime, r *rand.Rand) {
		a, av := randTensor(t, rt, r, false, 1, 1)
		b, bv := randTensor(t, rt, r, false, 1, 1)
		checkClose(t, ok(t)(MatMul(rt, a, b)), refMatMul(av, bv, 1, 1, 1, 1, false), 1e-6, 1e-6)
	}},
	opCase{"odd-batched", func(t *testing.T, rt *Runtime, r *rand.Rand) {
		a, av := randTensor(t, rt, r, false, 3, 17, 33)
		b, bv := randTensor(t, rt, r, false, 3, 33, 9)
		checkClose(t, ok(t)(MatMul(rt, a, b)), refMatMul(av, bv, 3, 17, 33, 9, false), 1e-4, 1e-5)
	}},
	opCase{"broadcast-2d-b", func(t *testing.T, rt *Runtime, r *rand.Rand) {
		a, av := randTensor(t, rt, r, false, 2, 3, 7, 13)
		b, bv := randTensor(t, rt, r, false, 13, 5)
		checkClose(t, ok(t)(MatMul(rt, a, b)), refMatMul(av, bv, 6, 7, 13, 5, true), 1e-4, 1e-5)
	}},
	opCase{"transposed-views", func(t *testing.T, rt *Runtime, r *rand.Rand) {
		// strided a (4, 11, 6) and b given as the transpose of a (4, 5, 6) tensor
		a, av := randTensor(t, rt, r, true, 4, 11, 6)
		bt, btv := randTensor(t, rt, r, false, 4, 5, 6)
		b := ok(t)(Transpose(bt, 1, 2))
		bv := make([]float64, 4*6*5)
		for bi := 0; bi < 4; bi++ {
			for p := 0; p < 6; p++ {
				for j := 0; j < 5; j++ {
					bv[bi*30+p*5+j] = btv[bi*30+j*6+p]
				}
			}
		}
		checkClose(t, ok(t)(MatMul(rt, a, b)), refMatMul(av, bv, 4, 11, 6, 5, false), 1e-4, 1e-5)
	}},
	opCase{"empty-m-and-k", func(t *testing.T, rt *Runtime, r *rand.Rand) {
		a, _ := randTensor(t, rt, r, false, 0, 4)
		b, _ := randTensor(t, rt, r, false, 4, 3)
		checkClose(t, ok(t)(MatMul(rt, a, b)), nil, 0, 0)
		a2, _ := randTensor(t, rt, r, false, 2, 0)
		b2, _ := randTensor(t, rt, r, false, 0, 3)
		checkClose(t, ok(t)(MatMul(rt, a2, b2)), make([]float64, 6), 0, 0)
	}},
)

// linearRef computes x·Wᵀ + b in float64 with W given as float64 values.
func linearRef(x, w, b []float64, rows, n, k int) []float64 {
	out := make([]float64, rows*n)
	for i := 0; i < rows; i++ {
		for j := 0; j < n; j++ {
			var s float64
			if b != nil {
				s = b[j]
			}
			for p := 0; p < k; p++ {
				s += x[i*k+p] * w[j*k+p]
			}
			out[i*n+j] = s
		}
	}
	return out
}

// weightOf stores float32 values in dtype d and returns the tensor and the stored values.
func weightOf(t *testing.T, rt *Runtime, d DType, vals []float32, n, k int) (*Tensor, []float64) {
	nb, _ := d.StorageBytes(len(vals))
	raw := make([]byte, nb)
	if err := EncodeFloat32(d, raw, vals); err != nil {
		t.Fatal(err)
	}
	back := make([]float32, len(vals))
	if err := DecodeFloat32(d, back, raw); err != nil {
		t.Fatal(err)
	}
	return ok(t)(rt.FromBytes(d, raw, n, k)), f64(back)
}

var _ = addCases(OpLinear,
	opCase{"plain-float-weights", func(t *testing.T, rt *Runtime, r *rand.Rand) {
		x, xv := randTensor(t, rt, r, true, 2, 3, 37)
		bias, bv := randTensor(t, rt, r, false, 19)
		wvals := randData(r, 19*37)
		for _, d := range []DType{F32, F16, BF16, F8E4M3FN, F8E5M2} {
			w, wv := weightOf(t, rt, d, wvals, 19, 37)
			checkClose(t, ok(t)(Linear(rt, x, w, bias)), linearRef(xv, wv, bv, 6, 19, 37), 1e-4, 1e-5)
			checkClose(t, ok(t)(Linear(rt, x, w, nil)), linearRef(xv, wv, nil, 6, 19, 37), 1e-4, 1e-5)
		}
	}},
	opCase{"q8_0-weight", func(t *testing.T, rt *Runtime, r *rand.Rand) {
		const n, k = 5, 64
		raw := make([]byte, n*k/32*34)
		wv := make([]float64, n*k)
		for blk := 0; blk < n*k/32; blk++ {
			d := float32(0.01 + r.Float64()*0.05)
			h := dtype.F32ToF16(d)
			raw[blk*34], raw[blk*34+1] = byte(h), byte(h>>8)
			for i := 0; i < 32; i++ {
				q := int8(r.IntN(255) - 127)
				raw[blk*34+2+i] = byte(q)
				wv[blk*32+i] = float64(dtype.F16ToF32(h)) * float64(q)
			}
		}
		w := ok(t)(rt.FromBytes(Q8_0, raw, n, k))
		x, xv := randTensor(t, rt, r, false, 3, k)
		checkClose(t, ok(t)(Linear(rt, x, w, nil)), linearRef(xv, wv, nil, 3, n, k), 1e-4, 1e-5)
	}},
	opCase{"one-row-one-col", func(t *testing.T, rt *Runtime, r *rand.Rand) {
		x, xv := randTensor(t, rt, r, false, 1, 1)
		w, wv := randTensor(t, rt, r, false, 1, 1)
		checkClose(t, ok(t)(Linear(rt, x, w, nil)), linearRef(xv, wv, nil, 1, 1, 1), 1e-6, 1e-6)
	}},
)

func convRef(x, w, b []float64, n, cin, h, wd, cout, kh, kw, s, p int) ([]float64, int, int) {
	oh, ow := (h+2*p-kh)/s+1, (wd+2*p-kw)/s+1
	out := make([]float64, n*cout*oh*ow)
	for bi := 0; bi < n; bi++ {
		for co := 0; co < cout; co++ {
			for oy := 0; oy < oh; oy++ {
				for ox := 0; ox < ow; ox++ {
					var acc float64
					if b != nil {
						acc = b[co]
					}
					for ci := 0; ci < cin; ci++ {
						for ky := 0; ky < kh; ky++ {
							for kx := 0; kx < kw; kx++ {
								iy, ix := oy*s-p+ky, ox*s-p+kx
								if iy < 0 || iy >= h || ix < 0 || ix >= wd {
									continue
								}
								acc += x[((bi*cin+ci)*h+iy)*wd+ix] * w[((co*cin+ci)*kh+ky)*kw+kx]
							}
						}
					}
					out[((bi*cout+co)*oh+oy)*ow+ox] = acc
				}
			}
		}
	}
	return out, oh, ow
}

func convCase(name string, n, cin, h, w, cout, k, s, p int, bias, strided bool, wd DType) opCase {
	return opCase{name, func(t *testing.T, rt *Runtime, r *rand.Rand) {
		x, xv := randTensor(t, rt, r, strided, n, cin, h, w)
		wt, wv := weightOf(t, rt, wd, randData(r, cout*cin*k*k), cout, cin*k*k)
		wt = ok(t)(Reshape(rt, wt, cout, cin, k, k))
		var b *Tensor
		var bv []float64
		if bias {
			b, bv = randTensor(t, rt, r, false, cout)
		}
		want, _, _ := convRef(xv, wv, bv, n, cin, h, w, cout, k, k, s, p)
		checkClose(t, ok(t)(Conv2D(rt, x, wt, b, s, p)), want, 1e-4, 1e-5)
	}}
}

var _ = addCases(OpConv2D,
	convCase("3x3-s1-p1-bias", 1, 3, 7, 9, 5, 3, 1, 1, true, false, F32),
	convCase("3x3-s2-p1-strided", 2, 4, 9, 6, 3, 3, 2, 1, true, true, F32),
	convCase("3x3-s2-p0", 2, 4, 5, 5, 6, 3, 2, 0, false, false, F32),
	convCase("1x1", 2, 6, 5, 3, 4, 1, 1, 0, true, false, F32),
	convCase("1x1-s2-f16", 1, 6, 5, 7, 4, 1, 2, 0, true, false, F16),
	convCase("3x3-f16-many-tiles", 1, 64, 32, 32, 8, 3, 1, 1, true, false, F16),
	convCase("3x3-batch-tiles", 3, 8, 20, 20, 5, 3, 1, 1, false, false, F32),
	convCase("3x3-s2-im2col-tiles", 1, 32, 66, 70, 4, 3, 2, 1, true, true, F32),
	convCase("5x5-s1-p2", 2, 3, 9, 8, 4, 5, 1, 2, true, false, BF16),
	convCase("1-pixel", 1, 2, 1, 1, 3, 3, 1, 1, true, false, F32),
	convCase("3x3-cout40-f16-strided", 2, 20, 10, 12, 40, 3, 1, 1, true, true, F16),
	convCase("1x1-cout33-bf16", 3, 17, 6, 5, 33, 1, 1, 0, true, false, BF16),
	opCase{"banded-small-scratch", func(t *testing.T, rt *Runtime, r *rand.Rand) {
		// a tiny scratch budget forces several row bands (stride 1) and 16-pixel
		// im2col tiles (stride 2)
		if rt.cpu != rt.Backend() {
			t.Skip("cpu-specific scratch setting")
		}
		old, oldForm := rt.cpu.tileFloats, rt.cpu.convForm
		rt.cpu.tileFloats = 500 // stride 1: one output row per band
		defer func() { rt.cpu.tileFloats, rt.cpu.convForm = old, oldForm }()
		x, xv := randTensor(t, rt, r, false, 2, 5, 13, 11)
		wt, wv := randTensor(t, rt, r, false, 3, 5, 3, 3)
		bt, bv := randTensor(t, rt, r, false, 3)
		for _, form := range []int{convFormBand, convFormCol} {
			rt.cpu.convForm = form
			for _, s := range []int{1, 2} {
				want, _, _ := convRef(xv, wv, bv, 2, 5, 13, 11, 3, 3, 3, s, 1)
				checkClose(t, ok(t)(Conv2D(rt, x, wt, bt, s, 1)), want, 1e-5, 1e-5)
			}
		}
	}},
	opCase{"vae-downsample-asymmetric-pad", func(t *testing.T, rt *Runtime, r *rand.Rand) {
		// F.pad(x, (0, 1, 0, 1)) then a 3×3 stride-2 conv: reference on the padded input
		const n, c, h, w, co = 2, 3, 6, 7, 4
		x, xv := randTensor(t, rt, r, true, n, c, h, w)
		wt, wv := randTensor(t, rt, r, false, co, c, 3, 3)
		padded := make([]float64, n*c*(h+1)*(w+1))
		for i := 0; i < n*c; i++ {
			for y := 0; y < h; y++ {
				copy(padded[(i*(h+1)+y)*(w+1):][:w], xv[(i*h+y)*w:][:w])
			}
		}
		want, _, _ := convRef(padded, wv, nil, n, c, h+1, w+1, co, 3, 3, 2, 0)
		got := ok(t)(Conv2DPadded(rt, x, wt, nil, ConvParams{Stride: 2, Bottom: 1, Right: 1}))
		if s := got.Shape(); s[2] != 3 || s[3] != 3 { // (6+1−3)/2+1, (7+1−3)/2+1
			t.Fatalf("shape %v", s)
		}
		checkClose(t, got, want, 1e-5, 1e-5)
	}},
)

func normRef(vals []float64, eps float64) []float64 {
	var mean float64
	for _, v := range vals {
		mean += v
	}
	mean /= float64(len(vals))
	var v2 float64
	for _, v := range vals {
		v2 += (v - mean) * (v - mean)
	}
	v2 /= float64(len(vals))
	out := make([]float64, len(vals))
	for i, v := range vals {
		out[i] = (v - mean) / math.Sqrt(v2+eps)
	}
	return out
}

var _ = addCases(OpGroupNorm,
	opCase{"affine-strided", func(t *testing.T, rt *Runtime, r *rand.Rand) {
		const n, c, h, w, g = 2, 6, 3, 5, 3
		x, xv := randTensor(t, rt, r, true, n, c, h, w)
		wt, wv := randTensor(t, rt, r, false, c)
		bt, bv := randTensor(t, rt, r, false, c)
		want := make([]float64, len(xv))
		per := c / g * h * w
		for i := 0; i < n*g; i++ {
			nv := normRef(xv[i*per:(i+1)*per], 1e-5)
			for j, v := range nv {
				ch := (i%g)*(c/g) + j/(h*w)
				want[i*per+j] = v*wv[ch] + bv[ch]
			}
		}
		checkClose(t, ok(t)(GroupNorm(rt, x, g, wt, bt, 1e-5)), want, 1e-5, 1e-5)
	}},
	opCase{"no-affine-1x1", func(t *testing.T, rt *Runtime, r *rand.Rand) {
		x, xv := randTensor(t, rt, r, false, 1, 4, 1, 1)
		want := append(normRef(xv[:2], 1e-6), normRef(xv[2:], 1e-6)...)
		checkClose(t, ok(t)(GroupNorm(rt, x, 2, nil, nil, 1e-6)), want, 1e-5, 1e-5)
	}},
)

var _ = addCases(OpLayerNorm,
	opCase{"affine-odd", func(t *testing.T, rt *Runtime, r *rand.Rand) {
		x, xv := randTensor(t, rt, r, true, 3, 7, 33)
		wt, wv := randTensor(t, rt, r, false, 33)
		bt, bv := randTensor(t, rt, r, false, 33)
		var want []float64
		for i := 0; i < 21; i++ {
			for j, v := range normRef(xv[i*33:(i+1)*33], 1e-6) {
				want = append(want, v*wv[j]+bv[j])
			}
		}
		checkClose(t, ok(t)(LayerNorm(rt, x, wt, bt, 1e-6)), want, 1e-5, 1e-5)
	}},
	opCase{"plain-and-empty", func(t *testing.T, rt *Runtime, r *rand.Rand) {
		x, xv := randTensor(t, rt, r, false, 2, 5)
		want := append(normRef(xv[:5], 1e-5), normRef(xv[5:], 1e-5)...)
		checkClose(t, ok(t)(LayerNorm(rt, x, nil, nil, 1e-5)), want, 1e-5, 1e-5)
		e, _ := randTensor(t, rt, r, false, 0, 5)
		checkClose(t, ok(t)(LayerNorm(rt, e, nil, nil, 1e-5)), nil, 0, 0)
	}},
)

var _ = addCases(OpRMSNorm,
	opCase{"weighted-strided", func(t *testing.T, rt *Runtime, r *rand.Rand) {
		x, xv := randTensor(t, rt, r, true, 4, 3, 17)
		wt, wv := randTensor(t, rt, r, false, 17)
		var want []float64
		for i := 0; i < 12; i++ {
			row := xv[i*17 : (i+1)*17]
			var ms float64
			for _, v := range row {
				ms += v * v
			}
			ms /= 17
			for j, v := range row {
				want = append(want, v/math.Sqrt(ms+1e-6)*wv[j])
			}
		}
		checkClose(t, ok(t)(RMSNorm(rt, x, wt, 1e-6)), want, 1e-5, 1e-5)
	}},
)

func softmaxRef(row []float64) []float64 {
	m := math.Inf(-1)
	for _, v := range row {
		m = math.Max(m, v)
	}
	out := make([]float64, len(row))
	var s float64
	for i, v := range row {
		out[i] = math.Exp(v - m)
		s += out[i]
	}
	for i := range out {
		out[i] /= s
	}
	return out
}

var _ = addCases(OpSoftmax,
	opCase{"with-neg-inf", func(t *testing.T, rt *Runtime, r *rand.Rand) {
		d := randData(r, 4*9)
		d[3], d[10] = float32(math.Inf(-1)), float32(math.Inf(-1))
		x := ok(t)(rt.FromFloat32(d, 4, 9))
		xv := f64(d)
		var want []float64
		for i := 0; i < 4; i++ {
			want = append(want, softmaxRef(xv[i*9:(i+1)*9])...)
		}
		checkClose(t, ok(t)(Softmax(rt, x)), want, 1e-6, 1e-5)
	}},
	opCase{"nan-and-masked-rows", func(t *testing.T, rt *Runtime, r *rand.Rand) {
		ninf, nan := float32(math.Inf(-1)), float32(math.NaN())
		x := ok(t)(rt.FromFloat32([]float32{1, nan, 0, ninf, ninf, ninf, 0, 0, 0}, 3, 3))
		n := math.NaN()
		checkClose(t, ok(t)(Softmax(rt, x)), []float64{n, n, n, n, n, n, 1.0 / 3, 1.0 / 3, 1.0 / 3}, 1e-7, 0)
	}},
	opCase{"size-1-strided", func(t *testing.T, rt *Runtime, r *rand.Rand) {
		x, _ := randTensor(t, rt, r, true, 2, 3, 1)
		want := []float64{1, 1, 1, 1, 1, 1}
		checkClose(t, ok(t)(Softmax(rt, x)), want, 1e-7, 0)
	}},
)
