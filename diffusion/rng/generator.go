package rng

import "math"

// Generator is PyTorch's CPU generator (torch.Generator on "cpu"): an mt19937 engine plus
// the cached second normal of the double-precision Box-Muller path. It is not safe for
// concurrent use; each sampling run owns its generator.
type Generator struct {
	engine     mt19937
	nextNormal float64
	hasNormal  bool
}

// New returns a generator seeded as torch.manual_seed(seed) seeds the CPU generator:
// only the low 32 bits of the seed reach the engine.
func New(seed uint64) *Generator {
	g := &Generator{}
	g.Seed(seed)
	return g
}

// Seed resets the generator as torch.manual_seed does.
func (g *Generator) Seed(seed uint64) {
	g.engine.seed(uint32(seed))
	g.hasNormal = false
}

// random64 combines two engine outputs, the first as the high word (PyTorch's
// CPUGeneratorImpl::random64).
func (g *Generator) random64() uint64 {
	hi := g.engine.uint32()
	lo := g.engine.uint32()
	return uint64(hi)<<32 | uint64(lo)
}

// uniformFloat32 is at::uniform_real_distribution<float>(0, 1): the low 24 bits of one
// engine output scaled by 2^-24.
func (g *Generator) uniformFloat32() float32 {
	return float32(g.engine.uint32()&(1<<24-1)) * (1.0 / (1 << 24))
}

// uniformFloat64 is at::uniform_real_distribution<double>(0, 1): the low 53 bits of a
// 64-bit draw scaled by 2^-53.
func (g *Generator) uniformFloat64() float64 {
	return float64(g.random64()&(1<<53-1)) * (1.0 / (1 << 53))
}

// normalFloat64 is at::normal_distribution<double>(0, 1): Box-Muller on two double
// uniforms, returning the cosine branch and caching the sine branch for the next call.
func (g *Generator) normalFloat64() float64 {
	if g.hasNormal {
		g.hasNormal = false
		return g.nextNormal
	}
	u1 := g.uniformFloat64()
	u2 := g.uniformFloat64()
	r := math.Sqrt(-2 * math.Log1p(-u2))
	theta := 2 * math.Pi * u1
	g.nextNormal = r * math.Sin(theta)
	g.hasNormal = true
	return r * math.Cos(theta)
}

// Randint returns one value as torch.randint(low, high, (1,)) does (int64, CPU): one
// engine output v, then low + v mod (high − low) (random_from_to with a range below
// 2^32, as every range Randint takes is). It panics unless low < high and the range
// fits in 32 bits.
func (g *Generator) Randint(low, high int64) int64 {
	r := high - low
	if r <= 0 || r >= 1<<32 {
		panic("rng: Randint range must be in [1, 2^32)")
	}
	return low + int64(uint64(g.engine.uint32())%uint64(r))
}

// Rand fills out as torch.rand(len(out)) does (float32 uniforms in [0, 1)).
func (g *Generator) Rand(out []float32) {
	for i := range out {
		out[i] = g.uniformFloat32()
	}
}

// Randn fills out as torch.randn(len(out)) (float32, contiguous) does. Fewer than 16
// values take torch's scalar double path; 16 or more the float32 block path, in which
// every uniform is drawn first, Box-Muller runs on blocks of 16, and a tail shorter than
// 16 is produced by drawing 16 fresh uniforms for the last 16 slots.
func (g *Generator) Randn(out []float32) {
	n := len(out)
	if n < 16 {
		for i := range out {
			out[i] = float32(g.normalFloat64())
		}
		return
	}
	for i := range out {
		out[i] = g.uniformFloat32()
	}
	for i := 0; i+16 <= n; i += 16 {
		g.boxMuller16(out[i : i+16])
	}
	if n%16 != 0 {
		tail := out[n-16:]
		for i := range tail {
			tail[i] = g.uniformFloat32()
		}
		g.boxMuller16(tail)
	}
}

// boxMuller16 turns 16 uniforms into 16 normals: u[j] feeds the radius and u[j+8] the
// angle, the cosine lands in slot j and the sine in slot j+8 (torch's normal_fill_16).
// Every operation is rounded to float32, as the C++ template computes it in float, with
// correctly rounded log, sin and cos. torch's kernels use glibc's float functions (its
// portable build) or SLEEF's (its AVX2/AVX-512 builds), which are sometimes one ulp off
// the correctly rounded value, so a few values in a hundred differ by an ulp or two
// (see golden_test.go for the measured bounds).
func (g *Generator) boxMuller16(d []float32) {
	for j := 0; j < 8; j++ {
		u1 := 1 - d[j]
		u2 := d[j+8]
		radius := float32(math.Sqrt(float64(-2 * float32(math.Log(float64(u1))))))
		// 2.0f * pi<double> * u2 is evaluated in double, then stored as float.
		theta := float32(2 * math.Pi * float64(u2))
		d[j] = radius * float32(math.Cos(float64(theta)))
		d[j+8] = radius * float32(math.Sin(float64(theta)))
	}
}
