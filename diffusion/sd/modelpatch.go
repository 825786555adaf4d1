package sd

// Patches are what model patch nodes put on a copy of a MODEL beside PostCFG and
// CondBatch (ComfyUI's model_options: sampler_cfg_function, sampler_pre_cfg_function,
// disable_cfg1_optimization, and the transformer_options patches the UNet runs:
// output_block_patch and patches_replace "attn1"). The zero value patches nothing.
// Patch values are immutable and may be shared by concurrent runs; what a patch keeps
// during a run lives in the run (runState).
type Patches struct {
	// CFGFunc replaces cfg_function's uncond + (cond − uncond)·scale
	// (sampler_cfg_function: RescaleCFG, PerpNeg); nil for plain CFG.
	CFGFunc CFGFunc
	// PreCFG rewrite the cond/uncond predictions before they are combined, in order
	// (sampler_pre_cfg_function: FreSca).
	PreCFG []PreCFG
	// DisableCFG1 evaluates the negative even at cfg 1 (disable_cfg1_optimization:
	// SelfAttentionGuidance needs the uncond prediction).
	DisableCFG1 bool
	// OutputBlock rewrite each UNet output block's hidden state and skip connection
	// before they are concatenated, in order (output_block_patch: FreeU).
	OutputBlock []OutputBlockPatch
	// Attn1 replace the self-attention of UNet transformer blocks (patches_replace
	// "attn1": SelfAttentionGuidance's recorder); a later entry for the same block wins.
	Attn1 []Attn1Patch
	// InputBlock rewrite each UNet input block's output before it is kept as a skip
	// connection, InputBlockAfterSkip after, in order (input_block_patch,
	// input_block_patch_after_skip: PatchModelAddDownscale).
	InputBlock, InputBlockAfterSkip []InputBlockPatch
	// AttnInputs rewrite the inputs of every UNet attention's projections, in order
	// (attn1_patch and attn2_patch: HypernetworkLoader's hypernetworks).
	AttnInputs []AttnInputPatch
}

// clone returns a copy whose slices can be appended to without touching p's.
func (p Patches) clone() Patches {
	p.PreCFG = append([]PreCFG(nil), p.PreCFG...)
	p.OutputBlock = append([]OutputBlockPatch(nil), p.OutputBlock...)
	p.Attn1 = append([]Attn1Patch(nil), p.Attn1...)
	p.InputBlock = append([]InputBlockPatch(nil), p.InputBlock...)
	p.InputBlockAfterSkip = append([]InputBlockPatch(nil), p.InputBlockAfterSkip...)
	p.AttnInputs = append([]AttnInputPatch(nil), p.AttnInputs...)
	return p
}

// WithCFGFunc returns a copy of m whose guidance combination is f
// (set_model_sampler_cfg_function, which replaces any earlier one). disableCFG1 also
// turns off the cfg-1 shortcut, as the Python function's second argument does.
func (m *Model) WithCFGFunc(f CFGFunc, disableCFG1 bool) *Model {
	c := *m
	c.Patches = m.Patches.clone()
	c.CFGFunc = f
	c.DisableCFG1 = c.DisableCFG1 || disableCFG1
	return &c
}

// WithPreCFG returns a copy of m with f appended to its pre-CFG functions
// (set_model_sampler_pre_cfg_function).
func (m *Model) WithPreCFG(f PreCFG, disableCFG1 bool) *Model {
	c := *m
	c.Patches = m.Patches.clone()
	c.PreCFG = append(c.PreCFG, f)
	c.DisableCFG1 = c.DisableCFG1 || disableCFG1
	return &c
}

// WithPostCFGOptions is WithPostCFG with set_model_sampler_post_cfg_function's
// disable_cfg1_optimization argument.
func (m *Model) WithPostCFGOptions(f PostCFG, disableCFG1 bool) *Model {
	c := m.WithPostCFG(f)
	c.Patches = c.Patches.clone()
	c.DisableCFG1 = c.DisableCFG1 || disableCFG1
	return c
}

// WithOutputBlockPatch returns a copy of m with f appended to its UNet output-block
// patches (set_model_output_block_patch).
func (m *Model) WithOutputBlockPatch(f OutputBlockPatch) *Model {
	c := *m
	c.Patches = m.Patches.clone()
	c.OutputBlock = append(c.OutputBlock, f)
	return &c
}

// WithInputBlockPatch returns a copy of m with f appended to its UNet input-block
// patches: before the skip connection is kept (set_model_input_block_patch) or, with
// afterSkip, after (set_model_input_block_patch_after_skip).
func (m *Model) WithInputBlockPatch(f InputBlockPatch, afterSkip bool) *Model {
	c := *m
	c.Patches = m.Patches.clone()
	if afterSkip {
		c.InputBlockAfterSkip = append(c.InputBlockAfterSkip, f)
	} else {
		c.InputBlock = append(c.InputBlock, f)
	}
	return &c
}

// WithAttn1Patch returns a copy of m whose self-attention at f's blocks f replaces
// (set_model_attn1_replace).
func (m *Model) WithAttn1Patch(f Attn1Patch) *Model {
	c := *m
	c.Patches = m.Patches.clone()
	c.Attn1 = append(c.Attn1, f)
	return &c
}

// WithAttnInputPatch returns a copy of m with f appended to the patches of its
// attention inputs, self- and cross-attention alike (set_model_attn1_patch and
// set_model_attn2_patch with the same function).
func (m *Model) WithAttnInputPatch(f AttnInputPatch) *Model {
	c := *m
	c.Patches = m.Patches.clone()
	c.AttnInputs = append(c.AttnInputs, f)
	return &c
}

// runState is what patches keep during one sampling run (SelfAttentionGuidance's
// recorded attention), keyed by the patch.
type runState map[any]any

// finishConds completes prepared conds with what depends on the run rather than on
// the conditioning alone (process_conds' per-run encode_model_conds parts): an unCLIP
// model's label vectors, whose noise comes from the run's seed.
func (d *denoiser) finishConds(list []modelCond) error {
	if d.g.Model.UnCLIP == nil {
		return nil
	}
	return d.finishUnCLIP(list)
}
