package builtin

import (
	"context"
	"fmt"
	"math"
	"strings"

	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/gpu/resample"
	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// Latent arithmetic and batch nodes of comfy_extras/nodes_latent.py: LatentAdd,
// LatentSubtract, LatentMultiply, LatentInterpolate, LatentBatch, LatentConcat, LatentCut
// and LatentBatchSeedBehavior. Each returns a copy of its first latent's dict with new
// samples, so the first latent's noise_mask and batch_index travel with the result, as
// samples1.copy() keeps them in ComfyUI.

const latentModule = "comfy_extras.nodes_latent"

// latentArr is a latent's samples as host floats with their (N, C, H, W) shape.
type latentArr struct {
	data []float32
	s    [4]int
}

func latentArray(l *sd.Latent) (latentArr, error) {
	d, s, err := sd.LatentData(l)
	return latentArr{d, s}, err
}

func (a latentArr) per() int { return a.s[1] * a.s[2] * a.s[3] }

// result returns a copy of l's dict with a as its samples.
func (a latentArr) result(l *sd.Latent) (*sd.Latent, error) {
	return newLatent(l, a.data, a.s)
}

// repeatLatentBatch is comfy.utils.repeat_to_batch_size on dimension 0: a longer batch is cut
// to its first n items, a shorter one tiled and cut.
func repeatLatentBatch(a latentArr, n int) (latentArr, error) {
	if a.s[0] == n {
		return a, nil
	}
	per := a.per()
	if _, err := sizeOf("latent", n, per); err != nil {
		return latentArr{}, err
	}
	out := make([]float32, n*per)
	for i := 0; i < n; i++ {
		j := i % a.s[0]
		copy(out[i*per:(i+1)*per], a.data[j*per:(j+1)*per])
	}
	return latentArr{out, [4]int{n, a.s[1], a.s[2], a.s[3]}}, nil
}

// reshapeLatentTo is nodes_latent.py reshape_latent_to: a latent whose (C, H, W) differ
// from target's is resized to target's H×W (bilinear, centre crop, common_upscale), and
// with repeatBatch its batch is repeated or cut to target's.
func reshapeLatentTo(target [4]int, a latentArr, repeatBatch bool) (latentArr, error) {
	if a.s[1] != target[1] || a.s[2] != target[2] || a.s[3] != target[3] {
		if _, err := sizeOf("latent", a.s[0], a.s[1], target[2], target[3]); err != nil {
			return latentArr{}, err
		}
		d, err := resample.Upscale(a.data, a.s[0], a.s[1], a.s[2], a.s[3], target[3], target[2], "bilinear", "center")
		if err != nil {
			return latentArr{}, fmt.Errorf("builtin: latent resize: %w", err)
		}
		a = latentArr{d, [4]int{a.s[0], a.s[1], target[2], target[3]}}
	}
	if repeatBatch {
		return repeatLatentBatch(a, target[0])
	}
	return a, nil
}

// broadcast applies f elementwise under torch's broadcasting rules: each dimension must
// be equal or 1 in one of the operands; the result takes the larger.
func broadcast(a, b latentArr, f func(x, y float32) float32) (latentArr, error) {
	var s [4]int
	for i := range s {
		switch {
		case a.s[i] == b.s[i] || b.s[i] == 1:
			s[i] = a.s[i]
		case a.s[i] == 1:
			s[i] = b.s[i]
		default:
			return latentArr{}, fmt.Errorf("builtin: the size of tensor a (%d) must match the size of tensor b (%d) at non-singleton dimension %d (shapes %v and %v)",
				a.s[i], b.s[i], i, a.s, b.s)
		}
	}
	if _, err := sizeOf("latent", s[:]...); err != nil {
		return latentArr{}, err
	}
	strides := func(t [4]int) [4]int {
		st := [4]int{t[1] * t[2] * t[3], t[2] * t[3], t[3], 1}
		for i := range st {
			if t[i] == 1 {
				st[i] = 0
			}
		}
		return st
	}
	sa, sb := strides(a.s), strides(b.s)
	out := make([]float32, s[0]*s[1]*s[2]*s[3])
	o := 0
	for n := 0; n < s[0]; n++ {
		for c := 0; c < s[1]; c++ {
			for y := 0; y < s[2]; y++ {
				ia := n*sa[0] + c*sa[1] + y*sa[2]
				ib := n*sb[0] + c*sb[1] + y*sb[2]
				for x := 0; x < s[3]; x++ {
					out[o] = f(a.data[ia+x*sa[3]], b.data[ib+x*sb[3]])
					o++
				}
			}
		}
	}
	return latentArr{out, s}, nil
}

// latentPair is the two-latent input of LatentAdd, LatentSubtract and LatentInterpolate.
type latentPair struct {
	Samples1 *sd.Latent `input:"samples1"`
	Samples2 *sd.Latent `input:"samples2"`
}

// arrays returns samples1 and samples2 reshaped to it (reshape_latent_to).
func (p *latentPair) arrays(repeatBatch bool) (a, b latentArr, err error) {
	if a, err = latentArray(p.Samples1); err != nil {
		return
	}
	if b, err = latentArray(p.Samples2); err != nil {
		return
	}
	b, err = reshapeLatentTo(a.s, b, repeatBatch)
	return
}

// combine is samples1 op reshape_latent_to(samples2), keeping samples1's dict.
func (p *latentPair) combine(node string, f func(x, y float32) float32) (nodes.Result, error) {
	a, b, err := p.arrays(true)
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: %s: %w", node, err)
	}
	r, err := broadcast(a, b, f)
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: %s: %w", node, err)
	}
	return nodes.One(r.result(p.Samples1))
}

func pairSchema(name string, extra ...graph.Input) graph.Schema {
	return graph.Schema{
		Name: name, Category: "latent/advanced", PythonModule: latentModule,
		Inputs:  append([]graph.Input{socketV3("samples1", "LATENT"), socketV3("samples2", "LATENT")}, extra...),
		Outputs: outputs("LATENT"),
		Extra:   v3Extra(1, nil),
	}
}

// LatentAdd is nodes_latent.py LatentAdd: samples1 + samples2.
type LatentAdd struct{ latentPair }

// Schema implements nodes.Typed.
func (*LatentAdd) Schema() graph.Schema { return pairSchema("LatentAdd") }

// Run implements nodes.Typed.
func (n *LatentAdd) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return n.combine("LatentAdd", func(x, y float32) float32 { return x + y })
}

// LatentSubtract is nodes_latent.py LatentSubtract: samples1 − samples2.
type LatentSubtract struct{ latentPair }

// Schema implements nodes.Typed.
func (*LatentSubtract) Schema() graph.Schema { return pairSchema("LatentSubtract") }

// Run implements nodes.Typed.
func (n *LatentSubtract) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return n.combine("LatentSubtract", func(x, y float32) float32 { return x - y })
}

// LatentMultiply is nodes_latent.py LatentMultiply: samples × multiplier.
type LatentMultiply struct {
	Samples    *sd.Latent `input:"samples"`
	Multiplier float64    `input:"multiplier"`
}

// Schema implements nodes.Typed.
func (*LatentMultiply) Schema() graph.Schema {
	return graph.Schema{
		Name: "LatentMultiply", Category: "latent/advanced", PythonModule: latentModule,
		Inputs: []graph.Input{socketV3("samples", "LATENT"),
			{Name: "multiplier", Type: graph.TypeFloat, Default: 1.0, Min: graph.Num(-10.0), Max: graph.Num(10.0), Step: graph.Num(0.01)}},
		Outputs: outputs("LATENT"),
		Extra:   v3Extra(1, nil),
	}
}

// Run implements nodes.Typed; torch multiplies a float32 tensor by a Python float in
// float32.
func (n *LatentMultiply) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	a, err := latentArray(n.Samples)
	if err != nil {
		return nodes.Result{}, err
	}
	m := float32(n.Multiplier)
	out := make([]float32, len(a.data))
	for i, v := range a.data {
		out[i] = v * m
	}
	return nodes.One(newLatent(n.Samples, out, a.s))
}

// LatentInterpolate is nodes_latent.py LatentInterpolate: the two latents' unit
// vectors (over channels) mixed by ratio and rescaled to the mixed magnitude.
type LatentInterpolate struct {
	latentPair
	Ratio float64 `input:"ratio"`
}

// Schema implements nodes.Typed.
func (*LatentInterpolate) Schema() graph.Schema {
	return pairSchema("LatentInterpolate",
		graph.Input{Name: "ratio", Type: graph.TypeFloat, Default: 1.0, Min: graph.Num(0.0), Max: graph.Num(1.0), Step: graph.Num(0.01)})
}

// channelNorm is torch.linalg.vector_norm(x, dim=1) plus add, kept as the (N, H, W)
// result torch makes: shaped (1, N, H, W) here, so that broadcasting it against the
// (N, C, H, W) samples pairs it as ComfyUI's s / m does (batch against channels; only a
// batch of 1, or one equal to the channel count, broadcasts).
func channelNorm(a latentArr, add float32) latentArr {
	n, c, hw := a.s[0], a.s[1], a.s[2]*a.s[3]
	out := make([]float32, n*hw)
	for b := 0; b < n; b++ {
		for i := 0; i < hw; i++ {
			var s float32
			for ch := 0; ch < c; ch++ {
				v := a.data[(b*c+ch)*hw+i]
				s += v * v
			}
			out[b*hw+i] = float32(math.Sqrt(float64(s))) + add
		}
	}
	return latentArr{out, [4]int{1, n, a.s[2], a.s[3]}}
}

// nanToNum is torch.nan_to_num for float32: NaN → 0, ±Inf → ±MaxFloat32.
func nanToNum(v float32) float32 {
	switch {
	case v != v:
		return 0
	case math.IsInf(float64(v), 1):
		return math.MaxFloat32
	case math.IsInf(float64(v), -1):
		return -math.MaxFloat32
	}
	return v
}

// Run implements nodes.Typed (LatentInterpolate.execute, operation by operation).
func (n *LatentInterpolate) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	s1, s2, err := n.arrays(true)
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: LatentInterpolate: %w", err)
	}
	r, rest := float32(n.Ratio), float32(1.0-n.Ratio)
	div := func(x, y float32) float32 { return nanToNum(x / y) }
	steps := func() (latentArr, error) {
		m1, m2 := channelNorm(s1, 0), channelNorm(s2, 0)
		u1, err := broadcast(s1, m1, div)
		if err != nil {
			return latentArr{}, err
		}
		u2, err := broadcast(s2, m2, div)
		if err != nil {
			return latentArr{}, err
		}
		t, err := broadcast(u1, u2, func(x, y float32) float32 { return x*r + y*rest })
		if err != nil {
			return latentArr{}, err
		}
		st, err := broadcast(t, channelNorm(t, 0), div)
		if err != nil {
			return latentArr{}, err
		}
		mag, err := broadcast(m1, m2, func(x, y float32) float32 { return x*r + y*rest })
		if err != nil {
			return latentArr{}, err
		}
		return broadcast(st, mag, func(x, y float32) float32 { return x * y })
	}
	out, err := steps()
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: LatentInterpolate: %w", err)
	}
	return nodes.One(out.result(n.Samples1))
}

// LatentBatch is nodes_latent.py LatentBatch: samples2 (resized to samples1's H×W)
// appended to samples1's batch; batch_index lists both batches' indices (their own, or
// 0…N-1 each where a latent has none).
type LatentBatch struct{ latentPair }

// Schema implements nodes.Typed.
func (*LatentBatch) Schema() graph.Schema {
	s := pairSchema("LatentBatch")
	s.Category = "latent/batch"
	return s
}

func batchIndexOf(l *sd.Latent, n int) []int {
	if l.BatchIndex != nil {
		return l.BatchIndex
	}
	bi := make([]int, n)
	for i := range bi {
		bi[i] = i
	}
	return bi
}

// Run implements nodes.Typed; samples1's noise mask is kept as it is (ComfyUI copies
// samples1's dict).
func (n *LatentBatch) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	a, b, err := n.arrays(false)
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: LatentBatch: %w", err)
	}
	if a.s[1] != b.s[1] {
		return nodes.Result{}, fmt.Errorf("builtin: LatentBatch: samples1 has %d channels, samples2 %d", a.s[1], b.s[1])
	}
	s := a.s
	s[0] += b.s[0]
	if _, err := sizeOf("latent", s[:]...); err != nil {
		return nodes.Result{}, err
	}
	out, err := latentArr{append(append(make([]float32, 0, len(a.data)+len(b.data)), a.data...), b.data...), s}.result(n.Samples1)
	if err != nil {
		return nodes.Result{}, err
	}
	out.BatchIndex = append(append([]int(nil), batchIndexOf(n.Samples1, a.s[0])...), batchIndexOf(n.Samples2, b.s[0])...)
	return nodes.One(out, nil)
}

// latentDims maps a dim choice to the axis of a 4-D latent ComfyUI uses: x the last, y
// the one before, t the third from the end (the channels of an image latent).
func latentDim(dim string) int {
	switch {
	case strings.ContainsRune(dim, 'x'):
		return 3
	case strings.ContainsRune(dim, 'y'):
		return 2
	}
	return 1
}

// LatentConcat is nodes_latent.py LatentConcat: samples2 (its batch repeated to
// samples1's) joined to samples1 along x, y or t; a leading "-" puts samples2 first.
type LatentConcat struct {
	latentPair
	Dim string `input:"dim"`
}

// Schema implements nodes.Typed.
func (*LatentConcat) Schema() graph.Schema {
	return pairSchema("LatentConcat", comboV3("dim", "x", "-x", "y", "-y", "t", "-t"))
}

// Run implements nodes.Typed (torch.cat: every other dimension must agree).
func (n *LatentConcat) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	a, err := latentArray(n.Samples1)
	if err != nil {
		return nodes.Result{}, err
	}
	b, err := latentArray(n.Samples2)
	if err != nil {
		return nodes.Result{}, err
	}
	if b, err = repeatLatentBatch(b, a.s[0]); err != nil {
		return nodes.Result{}, err
	}
	first, second := a, b
	if strings.ContainsRune(n.Dim, '-') {
		first, second = b, a
	}
	out, err := concatLatent(first, second, latentDim(n.Dim))
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: LatentConcat: %w", err)
	}
	return nodes.One(out.result(n.Samples1))
}

// concatLatent is torch.cat((a, b), dim) for 4-D arrays.
func concatLatent(a, b latentArr, dim int) (latentArr, error) {
	for i := range a.s {
		if i != dim && a.s[i] != b.s[i] {
			return latentArr{}, fmt.Errorf("sizes of tensors must match except in dimension %d: %v and %v", dim, a.s, b.s)
		}
	}
	s := a.s
	s[dim] += b.s[dim]
	if _, err := sizeOf("latent", s[:]...); err != nil {
		return latentArr{}, err
	}
	// Blocks of a and b alternate: one block per index of the dimensions before dim.
	outer := 1
	for i := 0; i < dim; i++ {
		outer *= s[i]
	}
	ba, bb := len(a.data)/outer, len(b.data)/outer
	out := make([]float32, 0, len(a.data)+len(b.data))
	for o := 0; o < outer; o++ {
		out = append(out, a.data[o*ba:(o+1)*ba]...)
		out = append(out, b.data[o*bb:(o+1)*bb]...)
	}
	return latentArr{out, s}, nil
}

// narrowLatent is torch.narrow(a, dim, start, length) with 0 <= start.
func narrowLatent(a latentArr, dim, start, length int) latentArr {
	s := a.s
	s[dim] = length
	outer, inner := 1, 1
	for i := 0; i < dim; i++ {
		outer *= a.s[i]
	}
	for i := dim + 1; i < 4; i++ {
		inner *= a.s[i]
	}
	out := make([]float32, 0, outer*length*inner)
	for o := 0; o < outer; o++ {
		base := (o*a.s[dim] + start) * inner
		out = append(out, a.data[base:base+length*inner]...)
	}
	return latentArr{out, s}
}

// LatentCut is nodes_latent.py LatentCut: amount slices from index along x, y or t; a
// negative index counts from the end; both are clamped to the latent.
type LatentCut struct {
	Samples *sd.Latent `input:"samples"`
	Dim     string     `input:"dim"`
	Index   int        `input:"index"`
	Amount  int        `input:"amount"`
}

// Schema implements nodes.Typed.
func (*LatentCut) Schema() graph.Schema {
	return graph.Schema{
		Name: "LatentCut", Category: "latent/advanced", PythonModule: latentModule,
		Inputs: []graph.Input{
			socketV3("samples", "LATENT"),
			comboV3("dim", "x", "y", "t"),
			{Name: "index", Type: graph.TypeInt, Default: 0, Min: graph.Num(-MaxResolution), Max: graph.Num(MaxResolution), Step: graph.Num(1)},
			{Name: "amount", Type: graph.TypeInt, Default: 1, Min: graph.Num(1), Max: graph.Num(MaxResolution), Step: graph.Num(1)},
		},
		Outputs: outputs("LATENT"),
		Extra:   v3Extra(1, nil),
	}
}

// Run implements nodes.Typed.
func (n *LatentCut) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	a, err := latentArray(n.Samples)
	if err != nil {
		return nodes.Result{}, err
	}
	dim := latentDim(n.Dim)
	size := a.s[dim]
	index, amount := n.Index, n.Amount
	if index >= 0 {
		index = min(index, size-1)
		amount = min(size-index, amount)
	} else {
		index = max(index, -size)
		amount = min(-index, amount)
		index += size // torch.narrow counts a negative start from the end
	}
	return nodes.One(narrowLatent(a, dim, index, amount).result(n.Samples))
}

// LatentBatchSeedBehavior is nodes_latent.py LatentBatchSeedBehavior: "random" drops
// batch_index (each item gets its own noise), "fixed" gives every item the first item's
// index (or 0), so the whole batch gets the same noise.
type LatentBatchSeedBehavior struct {
	Samples      *sd.Latent `input:"samples"`
	SeedBehavior string     `input:"seed_behavior"`
}

// Schema implements nodes.Typed.
func (*LatentBatchSeedBehavior) Schema() graph.Schema {
	in := comboV3("seed_behavior", "random", "fixed")
	in.Default = "fixed"
	return graph.Schema{
		Name: "LatentBatchSeedBehavior", Category: "latent/advanced", PythonModule: latentModule,
		Inputs:  []graph.Input{socketV3("samples", "LATENT"), in},
		Outputs: outputs("LATENT"),
		Extra:   v3Extra(1, nil),
	}
}

// Run implements nodes.Typed.
func (n *LatentBatchSeedBehavior) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	out := *n.Samples
	switch n.SeedBehavior {
	case "random":
		out.BatchIndex = nil
	case "fixed":
		first := 0
		if len(n.Samples.BatchIndex) > 0 {
			first = n.Samples.BatchIndex[0]
		}
		out.BatchIndex = make([]int, n.Samples.Samples.Dim(0))
		for i := range out.BatchIndex {
			out.BatchIndex[i] = first
		}
	}
	return nodes.One(&out, nil)
}

// Interface guards.
var (
	_ nodes.Typed = (*LatentAdd)(nil)
	_ nodes.Typed = (*LatentSubtract)(nil)
	_ nodes.Typed = (*LatentMultiply)(nil)
	_ nodes.Typed = (*LatentInterpolate)(nil)
	_ nodes.Typed = (*LatentBatch)(nil)
	_ nodes.Typed = (*LatentConcat)(nil)
	_ nodes.Typed = (*LatentCut)(nil)
	_ nodes.Typed = (*LatentBatchSeedBehavior)(nil)
)
