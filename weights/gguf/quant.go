package gguf

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/forgeflow/forgeflow/internal/dtype"
	"github.com/forgeflow/forgeflow/weights"
)

// The quantizers reproduce gguf-py's numpy reference (gguf-py/gguf/quants.py, the port of
// ggml's quantize_row_*_ref), so that a file written here holds the same bytes gguf-py
// would write. Where gguf-py computes in float64 (Q4_0, Q5_0: np.float64(blocks) *
// np.float64(id)) so do we; elsewhere the math is float32, with products rounded before
// any addition (no FMA fusion).

// quantizers maps the types Quantize implements to their block functions.
var quantizers = map[Type]func(dst []byte, src []float32){
	TypeF32:  quantF32,
	TypeF16:  quantF16,
	TypeBF16: quantBF16,
	TypeQ4_0: quantQ4_0,
	TypeQ4_1: quantQ4_1,
	TypeQ5_0: quantQ5_0,
	TypeQ5_1: quantQ5_1,
	TypeQ8_0: quantQ8_0,
	// Not gguf-py's (it has none for these): quant_iq4.go.
	TypeIQ4_NL: quantIQ4NL,
	TypeIQ4_XS: quantIQ4XS,
}

// CanQuantize reports whether Quantize implements t.
func (t Type) CanQuantize() bool { return quantizers[t] != nil }

// Quantize encodes src (whole blocks of t) into dst, which must hold exactly the
// matching number of bytes.
func Quantize(dst []byte, t Type, src []float32) error {
	q := quantizers[t]
	if q == nil {
		return &weights.UnsupportedError{Format: "gguf", Offset: -1, Msg: "quantization to " + t.String()}
	}
	bs, ts := t.BlockSize(), t.TypeSize()
	if len(src)%bs != 0 {
		return fmt.Errorf("gguf: quantize %s: %d values are not whole blocks of %d", t, len(src), bs)
	}
	if want := len(src) / bs * ts; len(dst) != want {
		return fmt.Errorf("gguf: quantize %s: %d values need %d bytes, dst holds %d", t, len(src), want, len(dst))
	}
	q(dst, src)
	return nil
}

func putF16(b []byte, f float32) { binary.LittleEndian.PutUint16(b, dtype.F32ToF16(f)) }

func quantF32(dst []byte, src []float32) {
	for i, v := range src {
		binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
	}
}

func quantF16(dst []byte, src []float32) {
	for i, v := range src {
		putF16(dst[2*i:], v)
	}
}

// quantBF16 rounds to nearest even as every bfloat16 conversion does, but keeps a
// NaN's payload (its top bits, quieted) where c10 writes its canonical NaN: gguf-py's
// __compute_fp32_to_bf16 does this, and the writer reproduces gguf-py's bytes.
func quantBF16(dst []byte, src []float32) {
	for i, v := range src {
		h := dtype.F32ToBF16(v)
		if v != v {
			h = uint16(math.Float32bits(v)>>16) | 0x40
		}
		binary.LittleEndian.PutUint16(dst[2*i:], h)
	}
}

// absMax returns the element of largest magnitude (the first one on ties), as
// np.take_along_axis(blocks, abs(blocks).argmax(...)) does.
func absMax(x []float32) float32 {
	var m, am float32
	for _, v := range x {
		if a := float32(math.Abs(float64(v))); a > am {
			am, m = a, v
		}
	}
	return m
}

func minMax(x []float32) (lo, hi float32) {
	lo, hi = x[0], x[0]
	for _, v := range x[1:] {
		lo, hi = min(lo, v), max(hi, v)
	}
	return lo, hi
}

// inv is 1/d, or 0 when d is 0 (np.where(d == 0, 0, 1 / d)).
func inv(d float32) float32 {
	if d == 0 {
		return 0
	}
	return 1 / d
}

// truncClip is np.trunc(v).astype(np.uint8).clip(0, hi) for the values that occur here.
func truncClip(v float64, hi int) byte {
	t := math.Trunc(v)
	switch {
	case t < 0:
		return 0
	case t > float64(hi):
		return byte(hi)
	}
	return byte(t)
}

func quantQ4_0(dst []byte, src []float32) {
	for len(src) > 0 {
		x := src[:32]
		d := absMax(x) / -8
		id := float64(inv(d))
		putF16(dst, d)
		for j := 0; j < 16; j++ {
			lo := truncClip(float64(x[j])*id+8.5, 15)
			hi := truncClip(float64(x[j+16])*id+8.5, 15)
			dst[2+j] = lo | hi<<4
		}
		src, dst = src[32:], dst[18:]
	}
}

func quantQ4_1(dst []byte, src []float32) {
	for len(src) > 0 {
		x := src[:32]
		lo, hi := minMax(x)
		d := (hi - lo) / 15
		id := inv(d)
		putF16(dst, d)
		putF16(dst[2:], lo)
		for j := 0; j < 16; j++ {
			a := truncClip(float64(float32((x[j]-lo)*id)+0.5), 15)
			b := truncClip(float64(float32((x[j+16]-lo)*id)+0.5), 15)
			dst[4+j] = a | b<<4
		}
		src, dst = src[32:], dst[20:]
	}
}

func quantQ5_0(dst []byte, src []float32) {
	for len(src) > 0 {
		x := src[:32]
		d := absMax(x) / -16
		id := float64(inv(d))
		putF16(dst, d)
		var qh uint32
		for j := 0; j < 16; j++ {
			a := truncClip(float64(x[j])*id+16.5, 31)
			b := truncClip(float64(x[j+16])*id+16.5, 31)
			dst[6+j] = a&0xf | (b&0xf)<<4
			qh |= uint32(a>>4) << j
			qh |= uint32(b>>4) << (j + 16)
		}
		binary.LittleEndian.PutUint32(dst[2:], qh)
		src, dst = src[32:], dst[22:]
	}
}

func quantQ5_1(dst []byte, src []float32) {
	for len(src) > 0 {
		x := src[:32]
		lo, hi := minMax(x)
		d := (hi - lo) / 31
		id := inv(d)
		putF16(dst, d)
		putF16(dst[2:], lo)
		var qh uint32
		for j := 0; j < 16; j++ {
			a := truncClip(float64(float32((x[j]-lo)*id)+0.5), 31)
			b := truncClip(float64(float32((x[j+16]-lo)*id)+0.5), 31)
			dst[8+j] = a&0xf | (b&0xf)<<4
			qh |= uint32(a>>4) << j
			qh |= uint32(b>>4) << (j + 16)
		}
		binary.LittleEndian.PutUint32(dst[4:], qh)
		src, dst = src[32:], dst[24:]
	}
}

func quantQ8_0(dst []byte, src []float32) {
	for len(src) > 0 {
		x := src[:32]
		var amax float32
		for _, v := range x {
			amax = max(amax, float32(math.Abs(float64(v))))
		}
		d := amax / 127
		id := inv(d)
		putF16(dst, d)
		for j, v := range x {
			// np_roundf: round half away from zero, of the float32 product.
			dst[2+j] = byte(int8(math.Round(float64(float32(v * id)))))
		}
		src, dst = src[32:], dst[34:]
	}
}
