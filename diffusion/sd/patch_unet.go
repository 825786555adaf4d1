package sd

import (
	"fmt"

	"github.com/forgeflow/forgeflow/diffusion/unet"
	"github.com/forgeflow/forgeflow/gpu"
)

// OutputBlockPatch is an output_block_patch: it rewrites an output block's input h and
// skip connection before they are concatenated. The implementations are FreeU and
// FreeUV2.
type OutputBlockPatch interface {
	outputBlock(rt *gpu.Runtime, m *Model, i int, h, skip *gpu.Tensor) (*gpu.Tensor, *gpu.Tensor, error)
}

// InputBlockPatch is an input_block_patch (or _after_skip): it rewrites input block
// i's output h during a network call at sigma. The implementation is DeepShrink.
type InputBlockPatch interface {
	inputBlock(rt *gpu.Runtime, i int, sigma float32, h *gpu.Tensor) (*gpu.Tensor, error)
}

// Attn1Patch replaces the self-attention (attn1) of UNet transformer blocks
// (patches_replace["attn1"] under the key (block, number[, index])). Index −1 covers
// every transformer block of the UNet block; an entry with an index takes precedence
// over one without, as BasicTransformerBlock looks the three-part key up first.
//
// Every marks a patch of every transformer block (an attn1_patch such as HyperTile's
// rather than a replacement); a block's own Block/Index entry takes precedence over it.
type Attn1Patch struct {
	Block unet.Block
	Index int
	Every bool
	Fn    attnReplacer
}

// attnReplacer builds a self-attention replacement for one network call.
type attnReplacer interface {
	replaceAttn1(call *netCall) unet.AttentionFunc
}

// AttnInputPatch rewrites the inputs of a UNet attention's projections (ComfyUI's
// attn1_patch / attn2_patch functions of (n, context, value)): x goes to to_q, k to
// to_k, v to to_v; attn is 1 for the self-attention, 2 for the cross-attention. It
// returns the three to use and must not keep or release its inputs.
type AttnInputPatch interface {
	attnInputs(rt *gpu.Runtime, attn int, x, k, v *gpu.Tensor) (*gpu.Tensor, *gpu.Tensor, *gpu.Tensor, error)
}

// netCall is one network evaluation as patches see it: which list each batch chunk
// came from (ComfyUI's transformer_options["cond_or_uncond"]: 0 the first list of the
// calc_cond_batch call, 1 the second, …) and the items per chunk.
type netCall struct {
	d            *denoiser
	condOrUncond []int
	chunk        int
	// h and w are the latent size the network is called on (the entry's area;
	// transformer_options["original_shape"][-2:]).
	h, w int
}

// unetHooks builds the UNet hooks of one network call from the model's patches and
// the call's own attention replacements (extra); nil when nothing is patched.
// sigma is the call's noise level (transformer_options["sigmas"]).
func (d *denoiser) unetHooks(batch []*activeEntry, extra []Attn1Patch, sigma float32) (*unet.Hooks, error) {
	m := d.g.Model
	attn := append(append([]Attn1Patch(nil), m.Attn1...), extra...)
	grounded := batch[0].c.gligen != nil
	if len(m.OutputBlock) == 0 && len(attn) == 0 && len(m.AttnInputs) == 0 && !grounded && len(m.InputBlock) == 0 && len(m.InputBlockAfterSkip) == 0 {
		return nil, nil
	}
	call := &netCall{d: d, chunk: d.shape[0], h: batch[0].ah, w: batch[0].aw}
	for _, e := range batch {
		call.condOrUncond = append(call.condOrUncond, e.list)
	}
	h := &unet.Hooks{}
	input := func(ps []InputBlockPatch) []func(*gpu.Runtime, int, *gpu.Tensor) (*gpu.Tensor, error) {
		var fs []func(*gpu.Runtime, int, *gpu.Tensor) (*gpu.Tensor, error)
		for _, p := range ps {
			fs = append(fs, func(rt *gpu.Runtime, i int, x *gpu.Tensor) (*gpu.Tensor, error) {
				return p.inputBlock(rt, i, sigma, x)
			})
		}
		return fs
	}
	h.InputBlock, h.InputBlockAfterSkip = input(m.InputBlock), input(m.InputBlockAfterSkip)
	for _, p := range m.OutputBlock {
		h.OutputBlock = append(h.OutputBlock, func(rt *gpu.Runtime, i int, x, skip *gpu.Tensor) (*gpu.Tensor, *gpu.Tensor, error) {
			return p.outputBlock(rt, m, i, x, skip)
		})
	}
	for _, p := range m.AttnInputs {
		h.AttnInputs = append(h.AttnInputs, func(rt *gpu.Runtime, _ unet.Site, which int, x, k, v *gpu.Tensor) (*gpu.Tensor, *gpu.Tensor, *gpu.Tensor, error) {
			return p.attnInputs(rt, which, x, k, v)
		})
	}
	if len(attn) > 0 {
		h.Attn1 = func(at unet.Site) unet.AttentionFunc {
			var general, exact, every *Attn1Patch
			for i := range attn {
				p := &attn[i]
				if p.Every {
					every = p
					continue
				}
				if p.Block != at.Block {
					continue
				}
				switch p.Index {
				case at.Index:
					exact = p
				case -1:
					general = p
				}
			}
			if exact == nil {
				exact = general
			}
			if exact == nil {
				exact = every
			}
			if exact == nil {
				return nil
			}
			return exact.Fn.replaceAttn1(call)
		}
	}
	if grounded {
		f, err := d.gligenHook(batch[0])
		if err != nil {
			return nil, err
		}
		h.AfterAttn1 = append(h.AfterAttn1, f)
	}
	return h, nil
}

// tensorData returns a tensor's values and shape as float32 (a copy).
func tensorData(t *gpu.Tensor) ([]float32, []int, error) {
	v, err := t.Float32()
	if err != nil {
		return nil, nil, err
	}
	return append([]float32(nil), v...), t.Shape(), nil
}

// freeUScale returns the (backbone, skip) factors FreeU applies to an output block
// whose input has c channels: model_channels·4 → (b1, s1), ·2 → (b2, s2).
func freeUScale(m *Model, c int, b1, b2, s1, s2 float64) (b, s float64, ok bool) {
	if m.UNet == nil {
		return 0, 0, false
	}
	switch c {
	case m.UNet.ModelChannels * 4:
		return b1, s1, true
	case m.UNet.ModelChannels * 2:
		return b2, s2, true
	}
	return 0, 0, false
}

// freeUSkip is Fourier_filter(hsp, threshold=1, scale): the 2×2 lowest frequencies
// (fftshift positions H/2−1…H/2, W/2−1…W/2) of every channel scaled by s.
func freeUSkip(rt *gpu.Runtime, skip *gpu.Tensor, s float64) (*gpu.Tensor, error) {
	data, shape, err := tensorData(skip)
	if err != nil {
		return nil, err
	}
	if len(shape) != 4 {
		return nil, fmt.Errorf("FreeU: skip connection %v is not (N, C, H, W)", shape)
	}
	h, w := shape[2], shape[3]
	y0, y1 := pySlice(h/2-1, h/2+1, h)
	x0, x1 := pySlice(w/2-1, w/2+1, w)
	out := fourierScale(data, shape[0]*shape[1], h, w, freqBlock{y0, y1, x0, x1}, 1, s)
	return rt.FromFloat32(out, shape...)
}

// FreeU is FreeU's output-block patch (comfy_extras/nodes_freelunch.py): on the output
// blocks whose input has 4× or 2× model_channels channels, the first half of the
// backbone channels is scaled by B1 / B2 and the skip connection's lowest frequencies by
// S1 / S2.
type FreeU struct{ B1, B2, S1, S2 float64 }

func (f FreeU) outputBlock(rt *gpu.Runtime, m *Model, _ int, h, skip *gpu.Tensor) (*gpu.Tensor, *gpu.Tensor, error) {
	b, s, ok := freeUScale(m, h.Dim(1), f.B1, f.B2, f.S1, f.S2)
	if !ok {
		return h, skip, nil
	}
	data, shape, err := tensorData(h)
	if err != nil {
		return nil, nil, err
	}
	n, c, hw := shape[0], shape[1], shape[2]*shape[3]
	bf := float32(b)
	for bi := 0; bi < n; bi++ {
		half := data[bi*c*hw : (bi*c+c/2)*hw]
		for i := range half {
			half[i] *= bf
		}
	}
	return freeUApply(rt, data, shape, skip, s)
}

// freeUApply makes the scaled backbone tensor and filters the skip connection.
func freeUApply(rt *gpu.Runtime, data []float32, shape []int, skip *gpu.Tensor, s float64) (*gpu.Tensor, *gpu.Tensor, error) {
	nh, err := rt.FromFloat32(data, shape...)
	if err != nil {
		return nil, nil, err
	}
	ns, err := freeUSkip(rt, skip, s)
	if err != nil {
		nh.Release()
		return nil, nil, err
	}
	return nh, ns, nil
}

// FreeUV2 is FreeU_V2's output-block patch: the backbone factor is structure-aware,
// 1 + (B − 1)·m with m the channel mean of h normalised to [0, 1] per batch item.
type FreeUV2 struct{ B1, B2, S1, S2 float64 }

func (f FreeUV2) outputBlock(rt *gpu.Runtime, m *Model, _ int, h, skip *gpu.Tensor) (*gpu.Tensor, *gpu.Tensor, error) {
	b, s, ok := freeUScale(m, h.Dim(1), f.B1, f.B2, f.S1, f.S2)
	if !ok {
		return h, skip, nil
	}
	data, shape, err := tensorData(h)
	if err != nil {
		return nil, nil, err
	}
	n, c, hw := shape[0], shape[1], shape[2]*shape[3]
	bm1 := float32(b - 1)
	mean := make([]float32, hw)
	for bi := 0; bi < n; bi++ {
		item := data[bi*c*hw : (bi+1)*c*hw]
		for p := 0; p < hw; p++ {
			var sum float64
			for ch := 0; ch < c; ch++ {
				sum += float64(item[ch*hw+p])
			}
			mean[p] = float32(sum / float64(c))
		}
		lo, hi := mean[0], mean[0]
		for _, v := range mean {
			lo, hi = min(lo, v), max(hi, v)
		}
		for p := range mean {
			mean[p] = (mean[p] - lo) / (hi - lo)
		}
		for ch := 0; ch < c/2; ch++ {
			row := item[ch*hw : (ch+1)*hw]
			for p := range row {
				row[p] *= bm1*mean[p] + 1
			}
		}
	}
	return freeUApply(rt, data, shape, skip, s)
}
