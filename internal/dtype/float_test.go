package dtype

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"sort"
	"testing"
)

type codeVal struct {
	code uint32
	v    float64
}

// finiteCodes lists every finite code of a format with its value, sorted by value.
func finiteCodes(f smallFloat, bits int) []codeVal {
	var cs []codeVal
	for c := uint32(0); c < 1<<bits; c++ {
		v := f.decode(c)
		if math.IsNaN(v) || math.IsInf(v, 0) {
			continue
		}
		cs = append(cs, codeVal{c, v})
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i].v < cs[j].v })
	return cs
}

// nearestRef finds the correctly rounded code of v by search over all finite codes:
// the closest value, ties to the even code (even mantissa), overflow per the format.
func nearestRef(f smallFloat, cs []codeVal, v float64) (uint32, string) {
	maxv := cs[len(cs)-1].v
	// the rounding boundary past max is max + half an ulp of max
	ulp := maxv - cs[len(cs)-2].v
	if math.Abs(v) >= maxv+ulp/2 {
		if math.Abs(v) == maxv+ulp/2 && (f.maxCode&1) == 0 {
			goto search // tie goes to the even max
		}
		return 0, "overflow"
	}
search:
	i := sort.Search(len(cs), func(i int) bool { return cs[i].v >= v })
	best := -1
	for _, j := range []int{i - 1, i, i + 1} {
		if j < 0 || j >= len(cs) {
			continue
		}
		if best < 0 {
			best = j
			continue
		}
		db, dj := math.Abs(cs[best].v-v), math.Abs(cs[j].v-v)
		if dj < db || (dj == db && cs[j].v != cs[best].v && cs[j].code&1 == 0) {
			best = j
		}
	}
	c := cs[best].code
	if cs[best].v == 0 && math.Signbit(v) {
		c |= f.signBit()
	} else if cs[best].v == 0 {
		c &^= f.signBit()
	}
	return c, ""
}

// TestSmallFloatRounding checks the generic encoder of every format against an
// exhaustive search over its codes.
func TestSmallFloatRounding(t *testing.T) {
	type tc struct {
		name string
		f    smallFloat
		bits int
	}
	r := rand.New(rand.NewPCG(7, 8))
	for _, c := range []tc{{"f16", fmtF16, 16}, {"e5m2", fmtE5M2, 8}, {"e4m3fn", fmtE4M3FN, 8}} {
		t.Run(c.name, func(t *testing.T) {
			cs := finiteCodes(c.f, c.bits)
			// every finite code round-trips
			for _, cv := range cs {
				if got := c.f.encode(cv.v); c.f.decode(got) != cv.v || (cv.v == 0 && got != cv.code) {
					t.Fatalf("code %#x (%v) re-encodes to %#x", cv.code, cv.v, got)
				}
			}
			maxv := cs[len(cs)-1].v
			// random float32 values spanning subnormals to overflow, plus exact midpoints
			vals := []float64{0, math.Copysign(0, -1), maxv * 1.01, -maxv * 1.5, math.Inf(1), math.Inf(-1)}
			for i := 0; i+1 < len(cs); i++ {
				vals = append(vals, (cs[i].v+cs[i+1].v)/2)
			}
			for i := 0; i < 20000; i++ {
				e := r.Float64()*float64(c.f.bias*2+c.f.mbits+4) - float64(c.f.bias+c.f.mbits+2)
				v := float64(float32(math.Copysign(math.Exp2(e), r.Float64()-0.5)))
				vals = append(vals, v)
			}
			for _, v := range vals {
				got := c.f.encode(v)
				want, kind := nearestRef(c.f, cs, v)
				if kind == "overflow" {
					gv := c.f.decode(got)
					if c.f.hasInf && !(math.IsInf(gv, 0) && math.Signbit(gv) == math.Signbit(v)) {
						t.Fatalf("%v: got %#x (%v), want ±Inf", v, got, gv)
					}
					if !c.f.hasInf && !math.IsNaN(gv) {
						t.Fatalf("%v: got %#x (%v), want NaN", v, got, gv)
					}
					continue
				}
				if got != want {
					t.Fatalf("%v: got %#x (%v), want %#x (%v)", v, got, c.f.decode(got), want, c.f.decode(want))
				}
			}
			if g := c.f.decode(c.f.encode(math.NaN())); !math.IsNaN(g) {
				t.Fatalf("NaN encodes to %v", g)
			}
		})
	}
}

// TestF16ToF32Definition checks all 65536 binary16 patterns against the definition
// (-1)^s · 2^(e-15) · (1 + m/1024), subnormals 2^-14 · m/1024, the generic decoder, the
// bulk table and the round trip.
func TestF16ToF32Definition(t *testing.T) {
	all := make([]byte, 2<<16)
	for h := 0; h < 1<<16; h++ {
		binary.LittleEndian.PutUint16(all[2*h:], uint16(h))
	}
	bulk := make([]float32, 1<<16)
	DecodeF16(bulk, all)
	for h := 0; h < 1<<16; h++ {
		s, e, m := h>>15, (h>>10)&31, h&1023
		var want float64
		switch {
		case e == 31 && m == 0:
			want = math.Inf(1)
		case e == 31:
			want = math.NaN()
		case e == 0:
			want = math.Ldexp(float64(m)/1024, -14)
		default:
			want = math.Ldexp(1+float64(m)/1024, e-15)
		}
		if s == 1 {
			want = -want
		}
		got := F16ToF32(uint16(h))
		if math.Float32bits(bulk[h]) != math.Float32bits(got) {
			t.Fatalf("%#04x: DecodeF16 %g, F16ToF32 %g", h, bulk[h], got)
		}
		if ref := fmtF16.decode(uint32(h)); !(ref == want || math.IsNaN(ref) && math.IsNaN(want)) {
			t.Fatalf("%#04x: generic decoder %g, want %g", h, ref, want)
		}
		if math.IsNaN(want) {
			if !math.IsNaN(float64(got)) {
				t.Fatalf("%#04x: got %g, want NaN", h, got)
			}
			if back := F32ToF16(got); back != uint16(h&0x8000|0x7e00) {
				t.Fatalf("NaN %#04x came back as %#04x", h, back)
			}
			continue
		}
		if float64(got) != want || math.Signbit(float64(got)) != (s == 1) {
			t.Fatalf("%#04x: got %g, want %g", h, got, want)
		}
		if back := F32ToF16(got); back != uint16(h) {
			t.Fatalf("%#04x round-trips to %#04x", h, back)
		}
	}
}

// TestF32ToF16MatchesGeneric compares the bit-level binary16 rounding with the generic
// encoder (itself checked by exhaustive search) at every rounding boundary: each
// midpoint between neighbouring codes, one float32 ulp either side of it, and random
// values over the whole float32 range.
func TestF32ToF16MatchesGeneric(t *testing.T) {
	var vals []float32
	cs := finiteCodes(fmtF16, 16)
	for i := 0; i+1 < len(cs); i++ {
		mid := float32((cs[i].v + cs[i+1].v) / 2)
		vals = append(vals, mid, math.Nextafter32(mid, float32(math.Inf(1))), math.Nextafter32(mid, float32(math.Inf(-1))))
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 200000; i++ {
		vals = append(vals, math.Float32frombits(r.Uint32()))
	}
	vals = append(vals, 65519.996, 65520, float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.Copysign(0, -1)))
	for _, v := range vals {
		want := uint16(fmtF16.encode(float64(v)))
		if got := F32ToF16(v); got != want {
			t.Fatalf("F32ToF16(%g = %#08x) = %#04x, generic %#04x", v, math.Float32bits(v), got, want)
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
	cases := []struct {
		in   float32
		want uint16
	}{
		{1, 0x3f80},
		{math.Float32frombits(0x3f808000), 0x3f80}, // tie, even stays
		{math.Float32frombits(0x3f818000), 0x3f82}, // tie, odd rounds up
		{math.Float32frombits(0x3f808001), 0x3f81},
		{float32(math.Inf(1)), 0x7f80},
		{float32(math.Inf(-1)), 0xff80},
		{math.Float32frombits(0x7f7fffff), 0x7f80}, // max float rounds to Inf
		{math.Float32frombits(0x00000001), 0x0000}, // tiny subnormal to zero
		{math.Float32frombits(0x00018000), 0x0002}, // subnormal tie to even
		{math.Float32frombits(0x7fa00001), 0x7fc0}, // NaN: the quiet NaN
		{math.Float32frombits(0xffa00001), 0xffc0}, // with its sign
	}
	for _, c := range cases {
		if got := F32ToBF16(c.in); got != c.want {
			t.Errorf("F32ToBF16(%#x) = %#x, want %#x", math.Float32bits(c.in), got, c.want)
		}
	}
	all := make([]byte, 2<<16)
	for b := 0; b < 1<<16; b++ {
		binary.LittleEndian.PutUint16(all[2*b:], uint16(b))
	}
	bulk := make([]float32, 1<<16)
	DecodeBF16(bulk, all)
	for b := 0; b < 1<<16; b++ {
		f := BF16ToF32(uint16(b))
		if math.Float32bits(f) != uint32(b)<<16 || math.Float32bits(bulk[b]) != uint32(b)<<16 {
			t.Fatalf("%#x decodes to %#x (bulk %#x)", b, math.Float32bits(f), math.Float32bits(bulk[b]))
		}
		if f == f && F32ToBF16(f) != uint16(b) {
			t.Fatalf("%#x does not round-trip", b)
		}
	}
}

// TestF8 checks every float8 code against the definitions of torch.float8_e4m3fn and
// torch.float8_e5m2 computed from the sign, exponent and mantissa fields, the bulk
// decoders against the scalar ones, and the round trip of every finite code.
func TestF8(t *testing.T) {
	codes := make([]byte, 256)
	for v := range codes {
		codes[v] = byte(v)
	}
	e4, e5 := make([]float32, 256), make([]float32, 256)
	DecodeE4M3FN(e4, codes)
	DecodeE5M2(e5, codes)
	same := func(a, b float64) bool { return a == b || math.IsNaN(a) && math.IsNaN(b) }
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
		got := float64(E4M3FNToF32(uint8(v)))
		if !same(got, want) || !same(float64(e4[v]), want) {
			t.Errorf("e4m3fn %#02x = %g (bulk %g), want %g", v, got, e4[v], want)
		}
		if !math.IsNaN(want) && F32ToE4M3FN(float32(got)) != uint8(v) {
			t.Errorf("e4m3fn %#02x does not round-trip", v)
		}
		e5b, m2 := (v>>2)&31, v&3
		switch {
		case e5b == 31 && m2 == 0:
			want = s * math.Inf(1)
		case e5b == 31:
			want = math.NaN()
		case e5b == 0:
			want = s * float64(m2) / 4 * math.Pow(2, -14)
		default:
			want = s * (1 + float64(m2)/4) * math.Pow(2, float64(e5b-15))
		}
		got = float64(E5M2ToF32(uint8(v)))
		if !same(got, want) || !same(float64(e5[v]), want) {
			t.Errorf("e5m2 %#02x = %g (bulk %g), want %g", v, got, e5[v], want)
		}
		if !math.IsNaN(want) && F32ToE5M2(float32(got)) != uint8(v) {
			t.Errorf("e5m2 %#02x does not round-trip", v)
		}
		// e5m2 is the upper byte of a binary16
		if h := F16ToF32(uint16(v) << 8); !same(float64(h), want) {
			t.Errorf("e5m2 %#02x = %g, binary16 %#04x = %g", v, want, v<<8, h)
		}
	}
	if got := F32ToE4M3FN(470); !math.IsNaN(float64(E4M3FNToF32(got))) {
		t.Errorf("470 (past 448 + half an ulp) → e4m3fn %#02x, want NaN (no infinity)", got)
	}
	if got := F32ToE5M2(1e6); !math.IsInf(float64(E5M2ToF32(got)), 1) {
		t.Errorf("1e6 → e5m2 %#02x, want +Inf", got)
	}
}

// TestEncodeDecode round-trips exact values through every bulk pair.
func TestEncodeDecode(t *testing.T) {
	src := []float32{1.5, -2, 0.25, -0.5, 0}
	for _, c := range []struct {
		name string
		size int
		enc  func([]byte, []float32)
		dec  func([]float32, []byte)
	}{
		{"f32", 4, EncodeF32, DecodeF32},
		{"f16", 2, EncodeF16, DecodeF16},
		{"bf16", 2, EncodeBF16, DecodeBF16},
		{"e4m3fn", 1, EncodeE4M3FN, DecodeE4M3FN},
		{"e5m2", 1, EncodeE5M2, DecodeE5M2},
	} {
		buf := make([]byte, c.size*len(src))
		c.enc(buf, src)
		back := make([]float32, len(src))
		c.dec(back, buf)
		for i := range src {
			if back[i] != src[i] {
				t.Errorf("%s: %v came back as %v", c.name, src, back)
				break
			}
		}
	}
	f64 := binary.LittleEndian.AppendUint64(nil, math.Float64bits(1.0+1.0/(1<<30)))
	var one [1]float32
	DecodeF64(one[:], f64)
	if one[0] != 1 {
		t.Errorf("F64 1+2^-30 decodes to %v, want 1 (nearest float32)", one[0])
	}
}

// TestDecodeF16Exhaustive decodes every binary16 code through DecodeF16 (its fast path
// for normals and its table for the rest) and compares with F16ToF32 bit for bit; every
// non-NaN value encodes back to its code.
func TestDecodeF16Exhaustive(t *testing.T) {
	src := make([]byte, 2<<16)
	for h := range 1 << 16 {
		src[2*h], src[2*h+1] = byte(h), byte(h>>8)
	}
	dst := make([]float32, 1<<16)
	DecodeF16(dst, src)
	enc := make([]byte, len(src))
	EncodeF16(enc, dst)
	for h := range 1 << 16 {
		if got, want := math.Float32bits(dst[h]), math.Float32bits(F16ToF32(uint16(h))); got != want {
			t.Fatalf("DecodeF16(%#04x) = %#08x, F16ToF32 %#08x", h, got, want)
		}
		if !math.IsNaN(float64(dst[h])) && (enc[2*h] != src[2*h] || enc[2*h+1] != src[2*h+1]) {
			t.Fatalf("EncodeF16(DecodeF16(%#04x)) = %#02x%02x", h, enc[2*h+1], enc[2*h])
		}
	}
}
