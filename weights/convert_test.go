package weights

import (
	"errors"
	"math"
	"strings"
	"testing"
)

// TestF16RoundTrip converts every binary16 value to float32 and back.
func TestF16RoundTrip(t *testing.T) {
	for h := 0; h < 1<<16; h++ {
		f := F16ToF32(uint16(h))
		if math.IsNaN(float64(f)) {
			if back := F32ToF16(f); back&0x7c00 != 0x7c00 || back&0x3ff == 0 {
				t.Fatalf("NaN %#04x came back as %#04x", h, back)
			}
			continue
		}
		if back := F32ToF16(f); back != uint16(h) {
			t.Fatalf("%#04x -> %g -> %#04x", h, f, back)
		}
	}
}

func TestF32ToF16Rounding(t *testing.T) {
	tests := []struct {
		in   float32
		want uint16
	}{
		{1, 0x3c00},
		{65504, 0x7bff},
		{65520, 0x7c00},         // halfway to the next binade rounds up to infinity
		{65519.996, 0x7bff},     // just below the halfway point
		{1 + 1.0/2048, 0x3c00},  // tie rounds to even (down)
		{1 + 3.0/2048, 0x3c02},  // tie rounds to even (up)
		{5.9604645e-08, 0x0001}, // smallest subnormal
		{2.9802322e-08, 0x0000}, // half of it: tie to even gives zero
		{2.9802326e-08, 0x0001}, // just above half rounds up
		{float32(math.Copysign(0, -1)), 0x8000},
		{float32(math.Inf(-1)), 0xfc00},
		{1023.5 / (1 << 24), 0x0400}, // rounds up out of the subnormals into 2^-14
	}
	for _, tc := range tests {
		if got := F32ToF16(tc.in); got != tc.want {
			t.Errorf("F32ToF16(%g) = %#04x, want %#04x", tc.in, got, tc.want)
		}
	}
}

func TestBF16(t *testing.T) {
	tests := []struct {
		in   float32
		want uint16
	}{
		{1, 0x3f80},
		{math.Float32frombits(0x3f808000), 0x3f80}, // tie to even, down
		{math.Float32frombits(0x3f818000), 0x3f82}, // tie to even, up
		{math.Float32frombits(0x3f808001), 0x3f81},
		{float32(math.Inf(1)), 0x7f80},
	}
	for _, tc := range tests {
		if got := F32ToBF16(tc.in); got != tc.want {
			t.Errorf("F32ToBF16(%g) = %#04x, want %#04x", tc.in, got, tc.want)
		}
		if back := BF16ToF32(tc.want); tc.in == back && F32ToBF16(back) != tc.want {
			t.Errorf("round trip of %#04x", tc.want)
		}
	}
	if v := F32ToBF16(float32(math.NaN())); BF16ToF32(v) == BF16ToF32(v) {
		t.Errorf("NaN became %#04x", v)
	}
}

// TestF8 checks float8 values against the definitions of torch.float8_e4m3fn and
// torch.float8_e5m2 computed independently from sign, exponent and mantissa fields.
func TestF8(t *testing.T) {
	for v := 0; v < 256; v++ {
		s := 1.0
		if v&0x80 != 0 {
			s = -1
		}
		e, m := (v>>3)&15, v&7
		var want float64
		switch {
		case e == 15 && m == 7:
			want = math.NaN()
		case e == 0:
			want = s * float64(m) / 8 * math.Pow(2, -6)
		default:
			want = s * (1 + float64(m)/8) * math.Pow(2, float64(e-7))
		}
		got := float64(F8E4M3ToF32(uint8(v)))
		if !(got == want || math.IsNaN(got) && math.IsNaN(want)) {
			t.Errorf("e4m3 %#02x = %g, want %g", v, got, want)
		}
		e5, m2 := (v>>2)&31, v&3
		switch {
		case e5 == 31 && m2 == 0:
			want = s * math.Inf(1)
		case e5 == 31:
			want = math.NaN()
		case e5 == 0:
			want = s * float64(m2) / 4 * math.Pow(2, -14)
		default:
			want = s * (1 + float64(m2)/4) * math.Pow(2, float64(e5-15))
		}
		got = float64(F8E5M2ToF32(uint8(v)))
		if !(got == want || math.IsNaN(got) && math.IsNaN(want)) {
			t.Errorf("e5m2 %#02x = %g, want %g", v, got, want)
		}
	}
}

func TestToFloat32Errors(t *testing.T) {
	if err := ToFloat32(make([]float32, 1), []byte{1, 2, 3}, F32); err == nil || !strings.Contains(err.Error(), "do not make 1 elements") {
		t.Errorf("short data: %v", err)
	}
	if err := ToFloat32(nil, nil, "Q4_0"); err == nil || !strings.Contains(err.Error(), "cannot convert Q4_0") {
		t.Errorf("block type: %v", err)
	}
}

func TestShapeElements(t *testing.T) {
	tests := []struct {
		dims []int64
		want int64
		ok   bool
	}{
		{nil, 1, true},
		{[]int64{2, 3}, 6, true},
		{[]int64{0, 1 << 62, 1 << 62}, 0, true},
		{[]int64{1 << 40, 1 << 40}, 0, false},
		{[]int64{-1}, 0, false},
	}
	for _, tc := range tests {
		got, ok := ShapeElements(tc.dims, math.MaxInt64)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ShapeElements(%v) = %d, %v", tc.dims, got, ok)
		}
	}
}

func TestErrors(t *testing.T) {
	err := error(&FormatError{Format: "gguf", File: "a.gguf", Tensor: "w", Offset: 12, Msg: "bad", Err: errors.ErrUnsupported})
	if got := err.Error(); got != `gguf: invalid format: a.gguf: tensor "w": offset 12: bad` {
		t.Errorf("FormatError = %q", got)
	}
	if !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("Unwrap lost the cause")
	}
	err = &UnsupportedError{Format: "gguf", Offset: -1, Msg: "IQ1_M"}
	if got := err.Error(); got != "gguf: unsupported feature: IQ1_M" {
		t.Errorf("UnsupportedError = %q", got)
	}
}

func TestF16SliceToF32(t *testing.T) {
	src := make([]byte, 2<<16)
	for h := 0; h < 1<<16; h++ {
		src[2*h], src[2*h+1] = byte(h), byte(h>>8)
	}
	dst := make([]float32, 1<<16)
	F16SliceToF32(dst, src)
	for h := range dst {
		want := F16ToF32(uint16(h))
		if math.Float32bits(dst[h]) != math.Float32bits(want) {
			t.Fatalf("%#04x: %g, want %g", h, dst[h], want)
		}
	}
}
