package unet

import (
	"fmt"
	"slices"

	"github.com/forgeflow/forgeflow/gpu"
)

// Part is one of the UNet's three parts, named as ComfyUI's block tuples name them.
type Part string

// The parts of a UNet.
const (
	PartInput  Part = "input"
	PartMiddle Part = "middle"
	PartOutput Part = "output"
)

// Block identifies a TimestepEmbedSequential block: ("input", 4), ("middle", 0),
// ("output", 2) — transformer_options["block"].
type Block struct {
	Part   Part
	Number int
}

// Site is where a transformer block runs: its UNet block, its index among the spatial
// transformer's blocks (block_index) and the spatial transformer's position among
// those of the pass (transformer_index).
type Site struct {
	Block       Block
	Index       int
	Transformer int
}

// AttentionFunc computes attention from projected queries, keys and values, each
// (N, L, heads·dim), and returns (N, Lq, heads·dim) for the output projection: the
// functions of ComfyUI's patches_replace.
type AttentionFunc func(rt *gpu.Runtime, q, k, v *gpu.Tensor, heads int) (*gpu.Tensor, error)

// Hooks are the patches one forward pass runs with: ComfyUI's
// transformer_options["patches"] and ["patches_replace"] as UNetModel and
// BasicTransformerBlock consume them. A nil *Hooks or zero field changes nothing. The
// functions must not keep their input tensors; Forward releases an input a function
// replaced.
type Hooks struct {
	// InputBlock run, in order, on input block i's output h (after any control
	// residual) before it is kept as a skip connection (input_block_patch); what they
	// return is both the skip and the next block's input.
	InputBlock []func(rt *gpu.Runtime, i int, h *gpu.Tensor) (*gpu.Tensor, error)
	// InputBlockAfterSkip run, in order, on input block i's output after it was kept as
	// a skip connection (input_block_patch_after_skip): only the next block sees what
	// they return.
	InputBlockAfterSkip []func(rt *gpu.Runtime, i int, h *gpu.Tensor) (*gpu.Tensor, error)
	// OutputBlock run, in order, on output block i's input h and skip connection just
	// before they are concatenated (output_block_patch) and return the two to use.
	OutputBlock []func(rt *gpu.Runtime, i int, h, skip *gpu.Tensor) (*gpu.Tensor, *gpu.Tensor, error)
	// Attn1 returns the function that replaces the self-attention product of the
	// transformer block at a site, or nil to keep it (patches_replace["attn1"]).
	Attn1 func(at Site) AttentionFunc
	// AfterAttn1 run, in order, on a transformer block's tokens (N, L, C) right after
	// the self-attention residual (middle_patch: GLIGEN's gated self-attention).
	AfterAttn1 []func(rt *gpu.Runtime, at Site, x *gpu.Tensor) (*gpu.Tensor, error)
	// AttnInputs run, in order, on the inputs of a transformer block's attention
	// projections (attn1_patch for the self-attention, attn = 1, and attn2_patch for
	// the cross-attention, attn = 2): x goes to to_q, k to to_k and v to to_v. Before
	// the first function k and v are one tensor (the normed tokens, or the context).
	// A function returns the three to use (any of them unchanged).
	AttnInputs []func(rt *gpu.Runtime, at Site, attn int, x, k, v *gpu.Tensor) (*gpu.Tensor, *gpu.Tensor, *gpu.Tensor, error)
}

// pass is a forward pass's position for the hooks: the block being run and how many
// spatial transformers ran before.
type pass struct {
	hooks       *Hooks
	block       Block
	transformer int
}

// at returns the site of transformer block i of the current spatial transformer.
func (p *pass) at(i int) Site {
	return Site{Block: p.block, Index: i, Transformer: p.transformer}
}

// attn1 returns the self-attention replacement at transformer block i, or nil.
func (p *pass) attn1(i int) AttentionFunc {
	if p == nil || p.hooks == nil || p.hooks.Attn1 == nil {
		return nil
	}
	return p.hooks.Attn1(p.at(i))
}

// afterAttn1 applies the middle patches to x, releasing x when one replaces it.
func (p *pass) afterAttn1(rt *gpu.Runtime, i int, x *gpu.Tensor) (*gpu.Tensor, error) {
	if p == nil || p.hooks == nil {
		return x, nil
	}
	for _, f := range p.hooks.AfterAttn1 {
		y, err := f(rt, p.at(i), x)
		if err != nil {
			x.Release()
			return nil, fmt.Errorf("unet: %s block %d: %w", p.block.Part, p.block.Number, err)
		}
		if y != x {
			x.Release()
		}
		x = y
	}
	return x, nil
}

// outputBlock applies the output-block patches to h and skip before output block i
// concatenates them, releasing what a patch replaced.
func (p *pass) outputBlock(rt *gpu.Runtime, i int, h, skip *gpu.Tensor) (*gpu.Tensor, *gpu.Tensor, error) {
	if p == nil || p.hooks == nil {
		return h, skip, nil
	}
	for _, f := range p.hooks.OutputBlock {
		nh, ns, err := f(rt, i, h, skip)
		if err != nil {
			h.Release()
			skip.Release()
			return nil, nil, fmt.Errorf("unet: output block %d patch: %w", i, err)
		}
		if nh != h {
			h.Release()
		}
		if ns != skip {
			skip.Release()
		}
		h, skip = nh, ns
	}
	return h, skip, nil
}

// inputBlock applies the input-block patches fs to input block i's output h, releasing
// what a patch replaced.
func (p *pass) inputBlock(rt *gpu.Runtime, fs []func(*gpu.Runtime, int, *gpu.Tensor) (*gpu.Tensor, error), i int, h *gpu.Tensor) (*gpu.Tensor, error) {
	for _, f := range fs {
		nh, err := f(rt, i, h)
		if err != nil {
			h.Release()
			return nil, fmt.Errorf("unet: input block %d patch: %w", i, err)
		}
		if nh != h {
			h.Release()
		}
		h = nh
	}
	return h, nil
}

// inputHooks returns the pass's input-block patches before and after the skip.
func (p *pass) inputHooks() (before, after []func(*gpu.Runtime, int, *gpu.Tensor) (*gpu.Tensor, error)) {
	if p == nil || p.hooks == nil {
		return nil, nil
	}
	return p.hooks.InputBlock, p.hooks.InputBlockAfterSkip
}

// attnInputs applies the attention-input patches of attention attn (1 or 2) at
// transformer block i to x and the keys' and values' input kv. done releases what the
// patches made (never x or kv); call it once the projections have run.
func (p *pass) attnInputs(rt *gpu.Runtime, i, attn int, x, kv *gpu.Tensor) (q, k, v *gpu.Tensor, done func(), err error) {
	q, k, v = x, kv, kv
	var made []*gpu.Tensor
	done = func() {
		for j, t := range made {
			if t != x && t != kv && !slices.Contains(made[:j], t) {
				t.Release()
			}
		}
	}
	if p == nil || p.hooks == nil {
		return q, k, v, done, nil
	}
	for _, f := range p.hooks.AttnInputs {
		nq, nk, nv, err := f(rt, p.at(i), attn, q, k, v)
		if err != nil {
			done()
			return nil, nil, nil, nil, fmt.Errorf("unet: %s block %d: attn%d patch: %w", p.block.Part, p.block.Number, attn, err)
		}
		made = append(made, nq, nk, nv)
		q, k, v = nq, nk, nv
	}
	return q, k, v, done, nil
}

// patchesAttn reports whether attention-input patches run in this pass.
func (p *pass) patchesAttn() bool {
	return p != nil && p.hooks != nil && len(p.hooks.AttnInputs) > 0
}
