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
	if err := e.check(); err != nil {
		return err
	}
	if w.N < 0 || w.K < 0 {
		return fmt.Errorf("gemm: weight %s has negative shape %d×%d", w.DType, w.N, w.K)
	}
	wld, err := w.rowStride()
	if err != nil {
		return err
	}
	if w.N > 0 && w.K > 0 {
		rb, _ := w.DType.RowBytes(w.K)
		if need := (w.N-1)*wld + rb; len(w.Data) < need {
			return fmt.Errorf("gemm: weight %s %d×%d: %d bytes, need %d", w.DType, w.N, w.K, len(w.Data), need)
		}
	}
	n, k := w.N, w.K
	bt := Batch{Count: 1}
	if err := checkDims(m, n, k, bt); err != nil {
		return err
	}
	if err := checkMatrix("x", x, m, k, ldx, 1, 0); err != nil {
		return err
	}
	if err := checkMatrix("y", y, m, n, ldy, 1, 0); err != nil {
		return err
	}
	b := bSource{w: w, isW: true, wld: wld}
	if w.DType == F32 && nativeLittleEndian && isAligned4(w.Data) && wld%4 == 0 {
		// An f32 weight needs no conversion: read it as a transposed B.
		b = bSource{f32: bytesAsFloat32(w.Data), ld: wld / 4, trans: true}
	}
	if m == 0 || n == 0 {
		return nil
	}
	p := problem{
		m: m, n: n, k: k, acc: accumulate, batch: bt,
		a: aSource{data: x, ld: ldx},
		b: b, c: y, ldc: ldy,
	}
	if m <= rowDotMaxM && k > 0 {
		e.linearRows(&p)
		return nil
	}
	e.run(&p)
	return nil
}
