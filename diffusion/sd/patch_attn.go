package sd

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/forgeflow/forgeflow/diffusion/unet"
	"github.com/forgeflow/forgeflow/gpu"
)

// middleBlock is the UNet's middle block, where PAG and SAG act (("middle", 0)).
var middleBlock = unet.Block{Part: unet.PartMiddle, Number: 0}

// PerturbedAttentionGuidance is PerturbedAttentionGuidance's post-CFG function
// (comfy_extras/nodes_pag.py): the positive conditioning is evaluated once more with
// the middle block's self-attention replaced by its values (an identity attention map),
// and the result is pushed away from it: out + (cond − perturbed)·Scale.
type PerturbedAttentionGuidance struct {
	Scale float64
}

// identityAttention is PAG's perturbed_attention: the attention output is v.
type identityAttention struct{}

func (identityAttention) replaceAttn1(*netCall) unet.AttentionFunc {
	return func(rt *gpu.Runtime, _, _, v *gpu.Tensor, _ int) (*gpu.Tensor, error) {
		return gpu.Contiguous(rt, v)
	}
}

func (p PerturbedAttentionGuidance) postCFG(ctx context.Context, st *cfgStep) ([]float32, error) {
	if p.Scale == 0 {
		return st.denoised, nil
	}
	call := skipLayers{attn1: []Attn1Patch{{Block: middleBlock, Index: -1, Fn: identityAttention{}}}}
	outs, err := st.d.calcCondBatch(ctx, [][]modelCond{st.cond}, st.x, st.sigma, call)
	if err != nil {
		return nil, err
	}
	pag := outs[0]
	scale := float32(p.Scale)
	out := make([]float32, len(st.denoised))
	for i := range out {
		out[i] = st.denoised[i] + (st.condDenoised[i]-pag[i])*scale
	}
	return out, nil
}

// SelfAttentionGuidance is SelfAttentionGuidance (comfy_extras/nodes_sag.py). It is
// two patches: a self-attention replacement at the middle block's first transformer
// block that records the uncond's attention probabilities (attention_basic_with_sim),
// and a post-CFG function that blurs the uncond prediction where that attention is
// concentrated (create_blur_map), evaluates the uncond on the blurred latent and adds
// (blurred − that)·Scale. It needs the uncond at cfg 1 too (Install sets
// disable_cfg1_optimization).
type SelfAttentionGuidance struct {
	Scale, BlurSigma float64
	// key identifies the patch's recording in a run's state; a pointer so that two
	// SAG patches on one model keep apart.
	key *sagKey
}

type sagKey struct{ _ byte }

// sagScores is the recorded attention: probabilities (chunk·heads, L, L) of the uncond
// chunk of the last call that had one.
type sagScores struct {
	probs []float32
	rows  int // chunk·heads
	l     int
}

// NewSelfAttentionGuidance returns the patch for scale and blur_sigma.
func NewSelfAttentionGuidance(scale, blurSigma float64) SelfAttentionGuidance {
	return SelfAttentionGuidance{Scale: scale, BlurSigma: blurSigma, key: &sagKey{}}
}

// Install returns a copy of m with both of the patch's parts.
func (s SelfAttentionGuidance) Install(m *Model) *Model {
	return m.WithPostCFGOptions(s, true).WithAttn1Patch(Attn1Patch{Block: middleBlock, Index: 0, Fn: s})
}

func (s SelfAttentionGuidance) replaceAttn1(call *netCall) unet.AttentionFunc {
	return func(rt *gpu.Runtime, q, k, v *gpu.Tensor, heads int) (*gpu.Tensor, error) {
		uncond := -1
		for i, l := range call.condOrUncond {
			if l == 1 {
				uncond = i
				break
			}
		}
		out, probs, err := attentionWithProbs(rt, q, k, v, heads, uncond >= 0)
		if err != nil || uncond < 0 {
			return out, err
		}
		rows := call.chunk * heads
		l := q.Dim(1)
		if call.d.state == nil {
			call.d.state = runState{}
		}
		call.d.state[s.key] = &sagScores{probs: probs[uncond*rows*l*l : (uncond+1)*rows*l*l], rows: rows, l: l}
		return out, nil
	}
}

// attentionWithProbs is softmax(q·kᵀ/√d)·v over heads for q, k, v of (B, L, heads·d),
// in float32 with float64 dot products; with keep it also returns the probabilities
// (B·heads, Lq, Lk), batch-major as attention_basic_with_sim's sim.
func attentionWithProbs(rt *gpu.Runtime, q, k, v *gpu.Tensor, heads int, keep bool) (*gpu.Tensor, []float32, error) {
	qd, qs, err := tensorData(q)
	if err != nil {
		return nil, nil, err
	}
	kd, ks, err := tensorData(k)
	if err != nil {
		return nil, nil, err
	}
	vd, _, err := tensorData(v)
	if err != nil {
		return nil, nil, err
	}
	b, lq, inner := qs[0], qs[1], qs[2]
	lk := ks[1]
	if inner%heads != 0 {
		return nil, nil, fmt.Errorf("attention width %d is not divisible by %d heads", inner, heads)
	}
	dh := inner / heads
	scale := float32(math.Pow(float64(dh), -0.5))
	out := make([]float32, b*lq*inner)
	var probs []float32
	if keep {
		probs = make([]float32, b*heads*lq*lk)
	}
	row := make([]float32, lk)
	for bi := 0; bi < b; bi++ {
		for hd := 0; hd < heads; hd++ {
			for i := 0; i < lq; i++ {
				qv := qd[(bi*lq+i)*inner+hd*dh:][:dh]
				mx := float32(math.Inf(-1))
				for j := 0; j < lk; j++ {
					kv := kd[(bi*lk+j)*inner+hd*dh:][:dh]
					var dot float64
					for c := range qv {
						dot += float64(qv[c]) * float64(kv[c])
					}
					row[j] = float32(dot) * scale
					mx = max(mx, row[j])
				}
				var sum float64
				for j := range row {
					row[j] = float32(math.Exp(float64(row[j] - mx)))
					sum += float64(row[j])
				}
				o := out[(bi*lq+i)*inner+hd*dh:][:dh]
				acc := make([]float64, dh)
				for j := range row {
					row[j] = float32(float64(row[j]) / sum)
					vv := vd[(bi*lk+j)*inner+hd*dh:][:dh]
					for c := range acc {
						acc[c] += float64(row[j]) * float64(vv[c])
					}
				}
				for c := range o {
					o[c] = float32(acc[c])
				}
				if keep {
					copy(probs[((bi*heads+hd)*lq+i)*lk:][:lk], row)
				}
			}
		}
	}
	t, err := rt.FromFloat32(out, b, lq, inner)
	return t, probs, err
}

func (s SelfAttentionGuidance) postCFG(ctx context.Context, st *cfgStep) ([]float32, error) {
	h, w := st.d.shape[2], st.d.shape[3]
	if min(h, w) <= 4 {
		// Too small for the blur's reflect padding: ComfyUI skips the step.
		return st.denoised, nil
	}
	rec, _ := st.d.state[s.key].(*sagScores)
	if rec == nil || st.uncond == nil {
		return nil, errors.New("SelfAttentionGuidance: no negative prediction was evaluated (it needs a negative conditioning)")
	}
	degraded, err := sagBlurMap(st.uncondDenoised, st.d.shape, rec, s.BlurSigma)
	if err != nil {
		return nil, err
	}
	noised := make([]float32, len(degraded))
	for i := range noised {
		noised[i] = degraded[i] + st.x[i] - st.uncondDenoised[i]
	}
	outs, err := st.d.calcCondBatch(ctx, [][]modelCond{st.uncond}, noised, st.sigma, skipNone)
	if err != nil {
		return nil, err
	}
	sag := outs[0]
	scale := float32(s.Scale)
	out := make([]float32, len(st.denoised))
	for i := range out {
		out[i] = st.denoised[i] + (degraded[i]-sag[i])*scale
	}
	return out, nil
}

// sagBlurMap is create_blur_map with threshold 1: the key positions whose attention,
// averaged over heads and summed over queries, exceeds 1 form a mask at the middle
// block's resolution, which is upsampled (nearest) to the latent; there x0 is replaced
// by its Gaussian blur (gaussian_blur_2d, kernel 9).
func sagBlurMap(x0 []float32, shape [4]int, rec *sagScores, sigma float64) ([]float32, error) {
	b, c, lh, lw := shape[0], shape[1], shape[2], shape[3]
	total := rec.l
	if rec.rows%b != 0 {
		return nil, fmt.Errorf("SelfAttentionGuidance: %d attention rows for a batch of %d", rec.rows, b)
	}
	heads := rec.rows / b
	// The middle block's grid: the divisor of total nearest round(√(total·lh/lw)).
	x := int(math.RoundToEven(math.Sqrt(float64(lh) / float64(lw) * float64(total))))
	rows := 0
	for i := 0; i < int(math.Floor(math.Sqrt(float64(total))/2)) && rows == 0; i++ {
		for _, j := range []int{x + i, max(1, x-i)} {
			if total%j == 0 {
				rows = j
				break
			}
		}
	}
	if rows == 0 {
		return nil, fmt.Errorf("SelfAttentionGuidance: no grid for %d attention tokens of a %d×%d latent", total, lh, lw)
	}
	cols := total / rows
	mask := make([]float32, b*total)
	for bi := 0; bi < b; bi++ {
		sums := make([]float32, total)
		for j := 0; j < total; j++ {
			var s float32
			for i := 0; i < total; i++ {
				var m float32
				for hd := 0; hd < heads; hd++ {
					m += rec.probs[((bi*heads+hd)*total+i)*total+j]
				}
				s += m / float32(heads)
			}
			sums[j] = s
		}
		for j, s := range sums {
			if s > 1 {
				mask[bi*total+j] = 1
			}
		}
	}
	blurred := gaussianBlur9(x0, b*c, lh, lw, sigma)
	out := make([]float32, len(x0))
	sy, sx := float32(rows)/float32(lh), float32(cols)/float32(lw)
	for bi := 0; bi < b; bi++ {
		for yy := 0; yy < lh; yy++ {
			my := min(int(math.Floor(float64(float32(yy)*sy))), rows-1)
			for xx := 0; xx < lw; xx++ {
				mx := min(int(math.Floor(float64(float32(xx)*sx))), cols-1)
				m := mask[bi*total+my*cols+mx]
				for ch := 0; ch < c; ch++ {
					i := ((bi*c+ch)*lh+yy)*lw + xx
					out[i] = blurred[i]*m + x0[i]*(1-m)
				}
			}
		}
	}
	return out, nil
}

// gaussianBlur9 is gaussian_blur_2d(img, 9, sigma) on planes of h×w: the normalised
// kernel exp(−x²/2σ²) on linspace(−4, 4, 9), applied as the 9×9 outer product with
// reflect padding (h, w > 4).
func gaussianBlur9(x []float32, planes, h, w int, sigma float64) []float32 {
	const k, r = 9, 4
	var pdf [k]float32
	var sum float32
	s := float32(sigma)
	for i := range pdf {
		v := float32(i-r) / s
		pdf[i] = float32(math.Exp(float64(-0.5 * (v * v))))
		sum += pdf[i]
	}
	var ker [k]float32
	for i := range ker {
		ker[i] = pdf[i] / sum
	}
	reflect := func(i, n int) int {
		if i < 0 {
			return -i
		}
		if i >= n {
			return 2*(n-1) - i
		}
		return i
	}
	out := make([]float32, len(x))
	for p := 0; p < planes; p++ {
		src := x[p*h*w : (p+1)*h*w]
		dst := out[p*h*w : (p+1)*h*w]
		for yy := 0; yy < h; yy++ {
			for xx := 0; xx < w; xx++ {
				var acc float64
				for a := 0; a < k; a++ {
					row := src[reflect(yy+a-r, h)*w:]
					for c := 0; c < k; c++ {
						acc += float64(ker[a]*ker[c]) * float64(row[reflect(xx+c-r, w)])
					}
				}
				dst[yy*w+xx] = float32(acc)
			}
		}
	}
	return out
}
