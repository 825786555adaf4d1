package gpu

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"
)

// codesOf lists every finite code of a format with its value, sorted by value.
type codeVal struct {
	code uint32
	v    float64
}

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

func TestHalfExhaustive(t *testing.T) {
	for h := 0; h < 1<<16; h++ {
		f := HalfToFloat32(uint16(h))
		ref := fmtF16.decode(uint32(h))
		if math.IsNaN(ref) {
			if f == f {
				t.Fatalf("%#04x: got %v, want NaN", h, f)
			}
			continue
		}
		if float64(f) != ref || math.Signbit(float64(f)) != math.Signbit(ref) {
			t.Fatalf("%#04x: got %v, want %v", h, f, ref)
		}
		if back := Float32ToHalf(f); back != uint16(h) {
			t.Fatalf("%#04x round-trips to %#04x", h, back)
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
		{float32(math.Inf(-1)), 0xff80},
		{math.Float32frombits(0x7f7fffff), 0x7f80}, // max float rounds to Inf
		{math.Float32frombits(0x00000001), 0x0000}, // tiny subnormal to zero
		{math.Float32frombits(0x00018000), 0x0002}, // subnormal tie to even
	}
	for _, c := range cases {
		if got := Float32ToBF16(c.in); got != c.want {
			t.Errorf("Float32ToBF16(%#x) = %#x, want %#x", math.Float32bits(c.in), got, c.want)
		}
	}
	if got := Float32ToBF16(float32(math.NaN())); BF16ToFloat32(got) == BF16ToFloat32(got) {
		t.Errorf("NaN -> %#x is not NaN", got)
	}
	for b := 0; b < 1<<16; b++ {
		f := BF16ToFloat32(uint16(b))
		if f == f && Float32ToBF16(f) != uint16(b) {
			t.Fatalf("%#x does not round-trip", b)
		}
	}
}

func TestEncodeDecodeErrors(t *testing.T) {
	if err := DecodeFloat32(Q8_0, make([]float32, 32), make([]byte, 34)); err == nil {
		t.Error("decoding Q8_0 should fail")
	}
	if err := DecodeFloat32(F16, make([]float32, 4), make([]byte, 7)); err == nil {
		t.Error("short source should fail")
	}
	if err := EncodeFloat32(DType(99), nil, nil); err == nil {
		t.Error("unknown dtype should fail")
	}
	src := []float32{1.5, -2, 0.333, 1e-7, 70000}
	for _, d := range []DType{F32, F16, BF16, F8E4M3FN, F8E5M2} {
		n, _ := d.StorageBytes(len(src))
		buf := make([]byte, n)
		if err := EncodeFloat32(d, buf, src); err != nil {
			t.Fatal(err)
		}
		back := make([]float32, len(src))
		if err := DecodeFloat32(d, back, buf); err != nil {
			t.Fatal(err)
		}
		if back[0] != 1.5 || back[1] != -2 {
			t.Errorf("%s: exact values changed: %v", d, back)
		}
	}
}
