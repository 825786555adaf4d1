package gemm

import "fmt"

// Linear computes y = x·Wᵀ (or y += x·Wᵀ when accumulate is true) with the
// Default engine: x is m×K float32 with row stride ldx, w is N×K in its
// storage dtype and y is m×N with row stride ldy. To add a bias, fill y with
// it and pass accumulate. W is converted to float32 panel by panel while it
// is packed, never expanded whole.
func Linear(m int, x []float32, ldx int, w Weight, y []float32, ldy int, accumulate bool) error {
	e, err := Default()
	if err != nil {
		return err
	}
	return e.Linear(m, x, ldx, w, y, ldy, accumulate)
}

// Linear computes y (+)= x·Wᵀ; see the package-level Linear.
func (e *Engine) Linear(m int, x []float32, ldx int, w Weight, y []float32, ldy int, accumulate bool) error {
	b, err := e.weightSource(w)
	if err != nil {
		return err
	}
	if err := checkDims(m, w.N, w.K, Batch{Count: 1}); err != nil {
		return err
	}
	if err := checkMatrix("x", x, m, w.K, ldx, 1, 0); err != nil {
		return err
	}
	if err := checkMatrix("y", y, m, w.N, ldy, 1, 0); err != nil {
		return err
	}
	if m == 0 || w.N == 0 {
		return nil
	}
	p := problem{
		m: m, n: w.N, k: w.K, acc: accumulate, batch: Batch{Count: 1},
		a: aSource{data: x, ld: ldx},
		b: b, c: y, ldc: ldy,
	}
	if m <= rowDotMaxM && w.K > 0 && len(w.Data) > 0 {
		e.linearRows(&p)
		return nil
	}
	if pk := e.usablePacked(&w); pk != nil {
		p.b = bSource{packed: pk}
	}
	e.run(&p)
	return nil
}

// LinearGather computes y (+)= A·Wᵀ like Linear, with a left operand A (m×K) that
// is gathered from x rather than stored: column p of A is the m consecutive
// elements x[off[p]], …, x[off[p]+m−1], so A[i][p] = x[off[p]+i]. With off
// pointing at shifted rows of a zero-padded image it is an implicit im2col: a
// stride-1 convolution becomes one product with the weight in its stored dtype,
// converted while it is packed (codex/gemm.md). len(off) must be W's K and
// every column must lie inside x.
func (e *Engine) LinearGather(m int, x []float32, off []int, w Weight, y []float32, ldy int, accumulate bool) error {
	b, err := e.weightSource(w)
	if err != nil {
		return err
	}
	if len(off) != w.K {
		return fmt.Errorf("gemm: gather: %d column offsets for K = %d", len(off), w.K)
	}
	if m < 0 {
		return fmt.Errorf("gemm: negative size m=%d", m)
	}
	if m > 0 {
		for p, o := range off {
			if o < 0 || o > len(x)-m {
				return fmt.Errorf("gemm: gather: column %d at %d: %d rows pass the %d elements of x", p, o, m, len(x))
			}
		}
	}
	if err := checkMatrix("y", y, m, w.N, ldy, 1, 0); err != nil {
		return err
	}
	if m == 0 || w.N == 0 {
		return nil
	}
	p := problem{
		m: m, n: w.N, k: w.K, acc: accumulate, batch: Batch{Count: 1},
		a: aSource{data: x, trans: true, offs: off},
		b: b, c: y, ldc: ldy,
	}
	if pk := e.usablePacked(&w); pk != nil {
		p.b = bSource{packed: pk}
	}
	e.run(&p)
	return nil
}

// weightSource checks w and returns it as the right operand (Wᵀ). A weight given only
// as Packed panels (no Data) must be usable by this Engine.
func (e *Engine) weightSource(w Weight) (bSource, error) {
	if err := e.check(); err != nil {
		return bSource{}, err
	}
	if w.N < 0 || w.K < 0 {
		return bSource{}, fmt.Errorf("gemm: weight %s has negative shape %d×%d", w.DType, w.N, w.K)
	}
	if len(w.Data) == 0 && w.Packed != nil && w.N > 0 && w.K > 0 {
		if e.usablePacked(&w) == nil {
			return bSource{}, fmt.Errorf("gemm: weight %d×%d given only as panels for %d×%d on path %s, which this %s engine cannot read",
				w.N, w.K, w.Packed.n, w.Packed.k, w.Packed.path, e.k.path)
		}
		return bSource{packed: w.Packed}, nil
	}
	wld, err := w.rowStride()
	if err != nil {
		return bSource{}, err
	}
	if w.N > 0 && w.K > 0 {
		rb, _ := w.DType.RowBytes(w.K)
		if need := (w.N-1)*wld + rb; len(w.Data) < need {
			return bSource{}, fmt.Errorf("gemm: weight %s %d×%d: %d bytes, need %d", w.DType, w.N, w.K, len(w.Data), need)
		}
	}
	if err := checkDims(0, w.N, w.K, Batch{Count: 1}); err != nil {
		return bSource{}, err
	}
	b := bSource{w: w, isW: true, wld: wld}
	if w.DType == F32 && nativeLittleEndian && isAligned4(w.Data) && wld%4 == 0 {
		// An f32 weight needs no conversion: read it as a transposed B.
		b = bSource{f32: bytesAsFloat32(w.Data), ld: wld / 4, trans: true}
	}
	return b, nil
}

// Transpose writes dst[c·ldd + r] = src[r·lds + c] for r < rows, c < cols
// with the Engine's packing transposer (4×4 register blocks on AVX-512):
// the pixel-major result of a LinearGather convolution becomes NCHW with it.
// dst and src must not overlap.
func (e *Engine) Transpose(rows, cols int, src []float32, lds int, dst []float32, ldd int) error {
	if err := e.check(); err != nil {
		return err
	}
	if rows < 0 || cols < 0 {
		return fmt.Errorf("gemm: transpose: negative size %d×%d", rows, cols)
	}
	if err := checkMatrix("transpose src", src, rows, cols, lds, 1, 0); err != nil {
		return err
	}
	if err := checkMatrix("transpose dst", dst, cols, rows, ldd, 1, 0); err != nil {
		return err
	}
	if rows == 0 || cols == 0 {
		return nil
	}
	e.k.packT(dst, src, lds, cols, rows, ldd)
	return nil
}
