package lora

import (
	"fmt"
	"math"

	"github.com/forgeflow/forgeflow/gpu"
)

// The update arithmetic of comfy/weight_adapter (lora.py, loha.py, lokr.py, base.py),
// re-derived from the formulas: every product in float32, as ComfyUI computes patches
// (calculate_weight's intermediate_dtype) before rounding the weight to its dtype.

// mat is a float32 array with its shape.
type mat struct {
	v     []float32
	shape []int
}

func (m mat) rows() int { return m.shape[0] }

// cols is the product of every dimension after the first (a convolution's in·kh·kw).
func (m mat) cols() int { return len(m.v) / max(m.shape[0], 1) }

func (s *Set) mat(key string) (mat, error) {
	v, shape, err := s.File.values(key)
	if err != nil {
		return mat{}, err
	}
	if len(shape) == 0 {
		return mat{}, &FormatError{File: s.File.name, Key: key, Msg: "a scalar where a matrix belongs"}
	}
	return mat{v, shape}, nil
}

// matmul returns a (m×k) · b (k×n) through the runtime's GEMM.
func matmul(rt *gpu.Runtime, a []float32, b []float32, m, k, n int) ([]float32, error) {
	at, err := rt.FromFloat32(a, m, k)
	if err != nil {
		return nil, err
	}
	defer at.Release()
	bt, err := rt.FromFloat32(b, k, n)
	if err != nil {
		return nil, err
	}
	defer bt.Release()
	c, err := gpu.MatMul(rt, at, bt)
	if err != nil {
		return nil, err
	}
	if v, ok := c.HostFloat32(); ok {
		// The product's own storage, not a copy: c is dropped unreleased, so its buffer
		// leaves the pool and is collected with the slice.
		return v, nil
	}
	defer c.Release()
	return c.Float32()
}

// dense returns the adapter's update ΔW before strength and scale, with numel equal to
// the weight's, and the scale (alpha/rank, 1 without alpha) it is multiplied by.
func (s *Set) dense(rt *gpu.Runtime, a *Adapter, numel int) ([]float32, float64, error) {
	var d []float32
	scale := 1.0
	var err error
	switch a.Kind {
	case KindLoRA:
		d, scale, err = s.loraDense(rt, a)
	case KindLoHa:
		d, scale, err = s.lohaDense(rt, a)
	case KindLoKr:
		d, scale, err = s.lokrDense(rt, a)
	case KindDiff, KindSet:
		var m mat
		m, err = s.mat(a.Tensors["diff"])
		d = m.v
	default:
		err = fmt.Errorf("lora: adapter kind %s", a.Kind)
	}
	if err != nil {
		return nil, 0, err
	}
	if len(d) != numel {
		return nil, 0, fmt.Errorf("%w: %s update of %d values for %d", errShape, a.Kind, len(d), numel)
	}
	return d, scale, nil
}

// loraFactors returns up (out, r) and down (r, in·kh·kw) of a LoRA adapter, the Tucker
// mid (LoCon's lora_mid) folded into down as weight_adapter/lora.py does, and the scale
// alpha/r (r = down's rows, read before the fold).
func (s *Set) loraFactors(a *Adapter) (up, down mat, scale float64, err error) {
	if up, err = s.mat(a.Tensors["up"]); err != nil {
		return
	}
	if down, err = s.mat(a.Tensors["down"]); err != nil {
		return
	}
	r := down.rows()
	if up.cols() != r {
		err = fmt.Errorf("%w: up %v and down %v have different ranks", errShape, up.shape, down.shape)
		return
	}
	scale = 1
	if a.Alpha != nil {
		scale = *a.Alpha / float64(r)
	}
	if key := a.Tensors["mid"]; key != "" {
		var mid mat
		if mid, err = s.mat(key); err != nil {
			return
		}
		down, err = foldMid(down, mid)
	}
	return
}

// foldMid combines down (r, in[,1,1]) with a Tucker core mid (r', r, kh, kw) into
// (r', in, kh, kw): out[a,i,k,l] = Σ_b down[b,i]·mid[a,b,k,l].
func foldMid(down, mid mat) (mat, error) {
	if len(mid.shape) != 4 || mid.shape[1] != down.rows() {
		return mat{}, fmt.Errorf("%w: lora_mid %v does not follow lora_down %v", errShape, mid.shape, down.shape)
	}
	rb, in := down.rows(), down.cols()
	ra, kk := mid.shape[0], mid.shape[2]*mid.shape[3]
	out := make([]float32, ra*in*kk)
	for a := 0; a < ra; a++ {
		for i := 0; i < in; i++ {
			o := out[(a*in+i)*kk : (a*in+i+1)*kk]
			for b := 0; b < rb; b++ {
				dv := down.v[b*in+i]
				m := mid.v[(a*rb+b)*kk : (a*rb+b+1)*kk]
				for j := range o {
					o[j] += dv * m[j]
				}
			}
		}
	}
	return mat{out, []int{ra, in, mid.shape[2], mid.shape[3]}}, nil
}

func (s *Set) loraDense(rt *gpu.Runtime, a *Adapter) ([]float32, float64, error) {
	up, down, scale, err := s.loraFactors(a)
	if err != nil {
		return nil, 0, err
	}
	d, err := matmul(rt, up.v, down.v, up.rows(), down.rows(), down.cols())
	return d, scale, err
}

// tucker is einsum("i j k l, j r, i p -> p r k l", t, wb, wa): t (R, R', kh, kw),
// wb (R', in), wa (R, out) → (out, in, kh, kw), flattened.
func tucker(rt *gpu.Runtime, t, wb, wa mat) ([]float32, error) {
	if len(t.shape) != 4 || t.shape[1] != wb.rows() || t.shape[0] != wa.rows() {
		return nil, fmt.Errorf("%w: Tucker core %v with %v and %v", errShape, t.shape, wb.shape, wa.shape)
	}
	ri, rj, kk := t.shape[0], t.shape[1], t.shape[2]*t.shape[3]
	in := wb.cols()
	// temp[i, r, k] = Σ_j t[i, j, k]·wb[j, r]
	temp := make([]float32, ri*in*kk)
	for i := 0; i < ri; i++ {
		for j := 0; j < rj; j++ {
			tc := t.v[(i*rj+j)*kk : (i*rj+j+1)*kk]
			for r := 0; r < in; r++ {
				w := wb.v[j*in+r]
				o := temp[(i*in+r)*kk : (i*in+r+1)*kk]
				for k := range o {
					o[k] += tc[k] * w
				}
			}
		}
	}
	// out[p, (r, k)] = Σ_i wa[i, p]·temp[i, (r, k)]
	out := wa.cols()
	waT := make([]float32, out*ri)
	for i := 0; i < ri; i++ {
		for p := 0; p < out; p++ {
			waT[p*ri+i] = wa.v[i*out+p]
		}
	}
	return matmul(rt, waT, temp, out, ri, in*kk)
}

// hadamardFactor is one LoHa factor: wa·wb, or the Tucker product with core t.
func (s *Set) hadamardFactor(rt *gpu.Runtime, a *Adapter, wa, wb, t string) ([]float32, int, error) {
	am, err := s.mat(a.Tensors[wa])
	if err != nil {
		return nil, 0, err
	}
	bm, err := s.mat(a.Tensors[wb])
	if err != nil {
		return nil, 0, err
	}
	if key := a.Tensors[t]; key != "" {
		tm, err := s.mat(key)
		if err != nil {
			return nil, 0, err
		}
		d, err := tucker(rt, tm, bm, am)
		return d, bm.rows(), err
	}
	if am.cols() != bm.rows() {
		return nil, 0, fmt.Errorf("%w: %s %v · %s %v", errShape, wa, am.shape, wb, bm.shape)
	}
	d, err := matmul(rt, am.v, bm.v, am.rows(), bm.rows(), bm.cols())
	return d, bm.rows(), err
}

func (s *Set) lohaDense(rt *gpu.Runtime, a *Adapter) ([]float32, float64, error) {
	m1, r, err := s.hadamardFactor(rt, a, "w1a", "w1b", "t1")
	if err != nil {
		return nil, 0, err
	}
	m2, _, err := s.hadamardFactor(rt, a, "w2a", "w2b", "t2")
	if err != nil {
		return nil, 0, err
	}
	if len(m1) != len(m2) {
		return nil, 0, fmt.Errorf("%w: LoHa factors of %d and %d values", errShape, len(m1), len(m2))
	}
	for i := range m1 {
		m1[i] *= m2[i]
	}
	scale := 1.0
	if a.Alpha != nil {
		scale = *a.Alpha / float64(r) // alpha / w1b's rows
	}
	return m1, scale, nil
}

func (s *Set) lokrDense(rt *gpu.Runtime, a *Adapter) ([]float32, float64, error) {
	dim := 0
	factor := func(w, wa, wb, t string) (mat, error) {
		if key := a.Tensors[w]; key != "" {
			return s.mat(key)
		}
		am, err := s.mat(a.Tensors[wa])
		if err != nil {
			return mat{}, err
		}
		bm, err := s.mat(a.Tensors[wb])
		if err != nil {
			return mat{}, err
		}
		dim = bm.rows()
		if key := a.Tensors[t]; key != "" {
			tm, err := s.mat(key)
			if err != nil {
				return mat{}, err
			}
			v, err := tucker(rt, tm, bm, am)
			return mat{v, []int{am.cols(), bm.cols(), tm.shape[2], tm.shape[3]}}, err
		}
		if am.cols() != bm.rows() {
			return mat{}, fmt.Errorf("%w: %s %v · %s %v", errShape, wa, am.shape, wb, bm.shape)
		}
		v, err := matmul(rt, am.v, bm.v, am.rows(), bm.rows(), bm.cols())
		return mat{v, []int{am.rows(), bm.cols()}}, err
	}
	w1, err := factor("w1", "w1a", "w1b", "")
	if err != nil {
		return nil, 0, err
	}
	w2, err := factor("w2", "w2a", "w2b", "t2")
	if err != nil {
		return nil, 0, err
	}
	scale := 1.0
	if a.Alpha != nil && dim > 0 {
		scale = *a.Alpha / float64(dim)
	}
	d, err := kron(w1, w2)
	return d, scale, err
}

// kron is torch.kron for a matrix w1 (a, b) and w2 (c, d) or (c, d, kh, kw) (w1 then
// taken as (a, b, 1, 1)): (a·c, b·d[, kh, kw]), flattened.
func kron(w1, w2 mat) ([]float32, error) {
	if len(w1.shape) != 2 || (len(w2.shape) != 2 && len(w2.shape) != 4) {
		return nil, fmt.Errorf("%w: LoKr factors %v ⊗ %v", errShape, w1.shape, w2.shape)
	}
	a, b := w1.shape[0], w1.shape[1]
	c, d := w2.shape[0], w2.shape[1]
	kk := len(w2.v) / (c * d)
	out := make([]float32, a*c*b*d*kk)
	cols := b * d * kk
	for i1 := 0; i1 < a; i1++ {
		for i2 := 0; i2 < c; i2++ {
			row := out[(i1*c+i2)*cols : (i1*c+i2+1)*cols]
			for j1 := 0; j1 < b; j1++ {
				f := w1.v[i1*b+j1]
				src := w2.v[i2*d*kk : (i2+1)*d*kk]
				dst := row[j1*d*kk : (j1+1)*d*kk]
				for k := range dst {
					dst[k] = f * src[k]
				}
			}
		}
	}
	return out, nil
}

// decompose is weight_adapter/base.py weight_decompose (DoRA) on w (out, …) in place:
// wc = w + scale·ΔW; its norm per output row (of w itself, as ComfyUI computes it) when
// dora_scale has one value per output, else per input channel (of wc); wc scaled by
// dora_scale/(norm + float32 eps); w becomes w + strength·(wc − w).
func decompose(w, d []float32, shape []int, dora mat, scale, strength float64) error {
	out := shape[0]
	inner := len(w) / out // in·kh·kw
	kk := 1
	for _, s := range shape[2:] {
		kk *= s
	}
	in := inner / kk
	sc := float32(scale)
	wc := make([]float32, len(w))
	for i := range w {
		wc[i] = w[i] + d[i]*sc
	}
	const eps = 1.1920928955078125e-07 // torch.finfo(torch.float32).eps
	if dora.shape[0] == out {
		if len(dora.v) != out {
			return fmt.Errorf("%w: dora_scale %v for %v", errShape, dora.shape, shape)
		}
		for o := 0; o < out; o++ {
			var ss float64
			for _, x := range w[o*inner : (o+1)*inner] {
				ss += float64(x) * float64(x)
			}
			f := dora.v[o] / (float32(math.Sqrt(ss)) + eps)
			for j := o * inner; j < (o+1)*inner; j++ {
				wc[j] *= f
			}
		}
	} else {
		if len(dora.v) != in {
			return fmt.Errorf("%w: dora_scale %v for %v", errShape, dora.shape, shape)
		}
		ss := make([]float64, in)
		for o := 0; o < out; o++ {
			for i := 0; i < in; i++ {
				for _, x := range wc[(o*in+i)*kk : (o*in+i+1)*kk] {
					ss[i] += float64(x) * float64(x)
				}
			}
		}
		f := make([]float32, in)
		for i := range f {
			f[i] = dora.v[i] / (float32(math.Sqrt(ss[i])) + eps)
		}
		for o := 0; o < out; o++ {
			for i := 0; i < in; i++ {
				for j := (o*in + i) * kk; j < (o*in+i+1)*kk; j++ {
					wc[j] *= f[i]
				}
			}
		}
	}
	if strength == 1 {
		copy(w, wc)
		return nil
	}
	st := float32(strength)
	for i := range w {
		w[i] += st * (wc[i] - w[i])
	}
	return nil
}
