package dtype

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"
)

// roundedDecoders pairs each rounded decoder with the float32 one and the offsets of
// its block's fp16 scales.
func roundedDecoders(r Rounding) []struct {
	name           string
	size, bytes    int
	scales         []int
	rounded, plain func([]float32, []byte)
} {
	return []struct {
		name           string
		size, bytes    int
		scales         []int
		rounded, plain func([]float32, []byte)
	}{
		{"Q8_0", QK, 34, []int{0}, r.DecodeQ8_0, DecodeQ8_0},
		{"Q4_0", QK, 18, []int{0}, r.DecodeQ4_0, DecodeQ4_0},
		{"Q4_1", QK, 20, []int{0, 2}, r.DecodeQ4_1, DecodeQ4_1},
		{"Q5_0", QK, 22, []int{0}, r.DecodeQ5_0, DecodeQ5_0},
		{"Q5_1", QK, 24, []int{0, 2}, r.DecodeQ5_1, DecodeQ5_1},
		{"Q2_K", QKK, 84, []int{80, 82}, r.DecodeQ2_K, DecodeQ2_K},
		{"Q3_K", QKK, 110, []int{108}, r.DecodeQ3_K, DecodeQ3_K},
		{"Q4_K", QKK, 144, []int{0, 2}, r.DecodeQ4_K, DecodeQ4_K},
		{"Q5_K", QKK, 176, []int{0, 2}, r.DecodeQ5_K, DecodeQ5_K},
		{"Q6_K", QKK, 210, []int{208}, r.DecodeQ6_K, DecodeQ6_K},
		{"IQ4_NL", QK, 18, []int{0}, r.DecodeIQ4_NL, DecodeIQ4_NL},
		{"IQ4_XS", QKK, 136, []int{0}, r.DecodeIQ4_XS, DecodeIQ4_XS},
	}
}

// TestRoundedDecoders checks the rounded block decoders on random blocks: float32
// arithmetic gives the plain decoders' bits; float16 and bfloat16 give values of their
// type; for the types whose value is one product of scale and quant, the rounded result
// is the float32 one rounded once (that product is exact in float32); and they differ
// from float32 somewhere, so the rounding is applied.
func TestRoundedDecoders(t *testing.T) {
	rng := rand.New(rand.NewPCG(71, 72))
	single := map[string]bool{"Q8_0": true, "Q4_0": true, "Q5_0": true, "IQ4_NL": true}
	for _, r := range []Rounding{RoundF32, RoundF16, RoundBF16} {
		for _, d := range roundedDecoders(r) {
			t.Run(r.String()+"/"+d.name, func(t *testing.T) {
				const n = 8
				src := make([]byte, n*d.bytes)
				for i := range src {
					src[i] = byte(rng.Uint32())
				}
				for b := 0; b < n; b++ {
					for _, off := range d.scales {
						binary.LittleEndian.PutUint16(src[b*d.bytes+off:], F32ToF16(float32(rng.NormFloat64())))
					}
				}
				got, plain := make([]float32, n*d.size), make([]float32, n*d.size)
				d.rounded(got, src)
				d.plain(plain, src)
				differ := false
				for i, g := range got {
					p := plain[i]
					switch {
					case r == RoundF32 && math.Float32bits(g) != math.Float32bits(p):
						t.Fatalf("element %d: %g, the float32 decoder gives %g", i, g, p)
					case r.Round(g) != g:
						t.Fatalf("element %d: %g is not a %s value", i, g, r)
					case single[d.name] && r == RoundF16 && g != r.Round(p):
						t.Fatalf("element %d: %g, want the float32 value %g rounded: %g", i, g, p, r.Round(p))
					}
					differ = differ || g != p
				}
				if r != RoundF32 && !differ {
					t.Fatalf("no element differs from float32 arithmetic")
				}
			})
		}
	}
}

// TestRound checks the two roundings on values between representable neighbours.
func TestRound(t *testing.T) {
	for _, c := range []struct {
		r       Rounding
		in, out float32
	}{
		{RoundF16, 1 + 1.0/2048, 1},                  // a tie goes to the even neighbour
		{RoundF16, 1 + 3.0/2048, 1 + 2.0/1024},       // a tie goes to the even neighbour
		{RoundF16, 70000, float32(math.Inf(1))},      // past the largest half
		{RoundBF16, 1 + 1.0/256, 1},                  // tie to even
		{RoundBF16, 1 + 3.0/256, 1 + 1.0/64},         // tie to even
		{RoundBF16, 1 + 1.0/1024, 1},                 // below half an ulp
		{RoundF32, 1 + 1.0/(1<<20), 1 + 1.0/(1<<20)}, // untouched
	} {
		if got := c.r.Round(c.in); got != c.out {
			t.Errorf("%s.Round(%g) = %g, want %g", c.r, c.in, got, c.out)
		}
	}
}

// TestRoundF16 compares the in-place float16 rounding with the round trip through the
// half's bits on every float32 near a half (each half value and its neighbours, the
// midpoints and theirs) and on random bit patterns.
func TestRoundF16(t *testing.T) {
	check := func(x float32) {
		want := F16ToF32(F32ToF16(x))
		if got := roundF16(x); math.Float32bits(got) != math.Float32bits(want) && !(got != got && want != want) {
			t.Fatalf("roundF16(%g = %#08x) = %g (%#08x), want %g (%#08x)", x, math.Float32bits(x), got, math.Float32bits(got), want, math.Float32bits(want))
		}
	}
	for h := 0; h < 1<<16; h++ {
		v := F16ToF32(uint16(h))
		next := F16ToF32(uint16(h + 1))
		for _, x := range []float32{v, (v + next) / 2} {
			b := math.Float32bits(x)
			for d := -2; d <= 2; d++ {
				check(math.Float32frombits(b + uint32(d)))
			}
		}
	}
	r := rand.New(rand.NewPCG(73, 74))
	for i := 0; i < 1<<21; i++ {
		check(math.Float32frombits(r.Uint32()))
	}
}
