package rng

import (
	"errors"
	"fmt"
	"math"
	"strconv"
)

// BrownianTree is the Brownian motion ComfyUI's SDE samplers draw their noise from
// (comfy/k_diffusion/sampling.py BrownianTreeNoiseSampler over torchsde's BrownianTree):
// a dyadic tree of intervals over [sigma_min, sigma_max] whose node increments are drawn
// from torch CPU generators seeded by numpy SeedSequence states, so the same seed gives
// the same noise for any order of queries.
//
// Re-derived from torchsde 0.2.6 _brownian/brownian_interval.py (halfway tree, tol 1e-6,
// pool size 24, no Lévy area) and the golden brownian specification; never copied.
// Times are float64 rounded to 6 decimals as Python's round does; increments are float32
// with torch's operation order.
type BrownianTree struct {
	seed   uint64
	size   int
	t0, t1 float64 // rounded ends of the root interval
	root   *bnode
}

type bnode struct {
	start, end  float64
	midway      float64
	split       bool
	key, depth  uint64
	w           []float32 // the increment over [start, end]
	parent      *bnode
	left, right *bnode
}

const (
	brownianPool = 24
	brownianTol  = 6 // decimals: tol = 1e-6
)

// NewBrownianTree builds the tree for sigmas in [sigmaMin, sigmaMax] (float32 values as
// ComfyUI passes them), noise tensors of size elements and the sampler's seed.
func NewBrownianTree(sigmaMin, sigmaMax float32, size int, seed uint64) (*BrownianTree, error) {
	a, b := float64(sigmaMin), float64(sigmaMax)
	if a > b {
		a, b = b, a
	}
	if !(b > a) || math.IsNaN(a) || math.IsInf(b, 0) {
		return nil, fmt.Errorf("rng: brownian tree needs sigma_min < sigma_max, got %v and %v", sigmaMin, sigmaMax)
	}
	if size <= 0 {
		return nil, errors.New("rng: brownian tree needs a non-empty noise shape")
	}
	t := &BrownianTree{seed: seed, size: size, t0: round6(a), t1: round6(b)}
	st := NewSeedSequence(seed, nil, brownianPool).GenerateState(3)
	w := make([]float32, size)
	g := New(uint64(st[0]))
	g.Randn(w)
	// The root increment scales by the unrounded interval length.
	scale := float32(math.Sqrt(b - a))
	for i := range w {
		w[i] *= scale
	}
	t.root = &bnode{start: t.t0, end: t.t1, w: w}
	return t, nil
}

// round6 is Python's round(x, 6): the double nearest to x correctly rounded to 6
// decimals, ties to even.
func round6(x float64) float64 {
	v, _ := strconv.ParseFloat(strconv.FormatFloat(x, 'f', brownianTol, 64), 64)
	return v
}

// Increment returns W(a, b), the Brownian increment from a to b (negative when a > b),
// as BatchedBrownianTree returns it.
func (t *BrownianTree) Increment(a, b float32) []float32 {
	lo, hi, sign := float64(a), float64(b), float32(1)
	if lo > hi {
		lo, hi, sign = hi, lo, -1
	}
	lo, hi = min(max(lo, t.t0), t.t1), min(max(hi, t.t0), t.t1)
	out := make([]float32, t.size)
	if lo == hi {
		return out
	}
	var nodes []*bnode
	t.locate(t.root, round6(lo), round6(hi), &nodes)
	copy(out, t.increment(nodes[0]))
	for _, n := range nodes[1:] {
		w := t.increment(n)
		for i := range out {
			out[i] += w[i]
		}
	}
	if sign < 0 {
		for i := range out {
			out[i] = -out[i]
		}
	}
	return out
}

// Noise returns what BrownianTreeNoiseSampler(sigma, sigmaNext) returns: the increment
// divided by √|sigmaNext − sigma| (a float32 difference).
func (t *BrownianTree) Noise(sigma, sigmaNext float32) []float32 {
	w := t.Increment(sigma, sigmaNext)
	d := sigmaNext - sigma
	if d < 0 {
		d = -d
	}
	s := float32(math.Sqrt(float64(d)))
	for i := range w {
		w[i] /= s
	}
	return w
}

// locate appends the maximal tree nodes that make up [a, b] to out, left to right,
// splitting nodes on the way (torchsde's _loc_inner descending from the root).
func (t *BrownianTree) locate(n *bnode, a, b float64, out *[]*bnode) {
	for {
		if a == n.start && b == n.end {
			*out = append(*out, n)
			return
		}
		if !n.split {
			// Split so that the query's inner end becomes a node boundary, then route
			// the query through the new children.
			if a == n.start {
				t.splitAt(n, b)
			} else {
				t.splitAt(n, a)
			}
		}
		switch {
		case b <= n.midway:
			n = n.left
		case a >= n.midway:
			n = n.right
		default:
			t.locate(n.left, a, n.midway, out)
			a = n.midway
			n = n.right
		}
	}
}

// splitAt splits n at its rounded halfway point and keeps halving the child that holds
// point p until p is a node boundary (the halfway tree).
// Every boundary is a multiple of 1e-6 and so is p, so the halving ends; a node too
// short to halve (its rounded midpoint is one of its ends) ends it as well.
func (t *BrownianTree) splitAt(n *bnode, p float64) {
	for {
		t.splitHalf(n)
		if n.midway == n.start || n.midway == n.end {
			return
		}
		switch {
		case p > n.midway:
			n = n.right
		case p < n.midway:
			n = n.left
		default:
			return
		}
	}
}

// splitHalf gives n its two children at the rounded halfway point; a child's spawn key is
// twice its parent's plus 0 (left) or 1 (right), its depth one more.
func (t *BrownianTree) splitHalf(n *bnode) {
	if n.split {
		return
	}
	n.midway = round6(0.5 * (n.end + n.start))
	n.split = true
	n.left = &bnode{start: n.start, end: n.midway, key: 2 * n.key, depth: n.depth + 1, parent: n}
	n.right = &bnode{start: n.midway, end: n.end, key: 2*n.key + 1, depth: n.depth + 1, parent: n}
}

// increment returns a node's W, computing it from its parent's when needed: the left
// child gets the Brownian-bridge mean plus √var · Z, the right child the remainder.
func (t *BrownianTree) increment(n *bnode) []float32 {
	if n.w != nil {
		return n.w
	}
	parent := n.parent
	wp := t.increment(parent)
	ld := parent.midway - parent.start
	rd := parent.end - parent.midway
	hr := 1 / (parent.end - parent.start)
	sd := float32(math.Sqrt(ld * rd * hr))
	st := NewSeedSequence(t.seed, []uint64{parent.key, parent.depth}, brownianPool).GenerateState(4)
	z := make([]float32, t.size)
	New(uint64(st[0])).Randn(z)
	left := make([]float32, t.size)
	right := make([]float32, t.size)
	fld, fhr := float32(ld), float32(hr)
	for i := range left {
		left[i] = fld*wp[i]*fhr + sd*z[i]
		right[i] = wp[i] - left[i]
	}
	parent.left.w, parent.right.w = left, right
	return n.w
}
