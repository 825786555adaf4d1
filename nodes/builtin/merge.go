package builtin

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// Model merging (comfy_extras/nodes_model_merging.py and
// nodes_model_merging_model_specific.py) through sd.MergeModels and sd.MergeCLIPs. Each
// node is add_patches(model2's weights, strength_patch, strength_model) on a clone of
// model1: W₁·strength_model + W₂·strength_patch, computed once in float32 and rounded
// to W₁'s dtype. A ratio is model1's share (ComfyUI's add_patches(…, 1−ratio, ratio)):
// ratio 1, the default, gives model1 back.

const mergeCategory = "advanced/model_merging"

// ratioInput is a merge ratio: 0 … 1 in steps of 0.01, default 1.
func ratioInput(name string) graph.Input {
	return graph.Input{Name: name, Type: graph.TypeFloat, Default: 1.0, Min: graph.Num(0.0), Max: graph.Num(1.0), Step: graph.Num(0.01)}
}

// multiplierInput is ModelMergeSubtract's and CLIPMergeSubtract's multiplier.
func multiplierInput() graph.Input {
	return graph.Input{Name: "multiplier", Type: graph.TypeFloat, Default: 1.0, Min: graph.Num(-10.0), Max: graph.Num(10.0), Step: graph.Num(0.01)}
}

// logSkipped warns about parameters a merge left alone because their shapes differ
// (ComfyUI's "WARNING SHAPE MISMATCH … WEIGHT NOT MERGED"), in one line.
func logSkipped(env *nodes.Env, node string, skipped []string) {
	if l := envLogger(env); l != nil && len(skipped) > 0 {
		l.Warn("merge: weights not merged: shape mismatch", "node", node, "count", len(skipped), "first", skipped[0])
	}
}

// mergeModels runs sd.MergeModels with every parameter at (self, other).
func mergeModels(ctx context.Context, env *nodes.Env, node string, m1, m2 *sd.Model, f sd.MergeFunc) (nodes.Result, error) {
	m, skipped, err := sd.MergeModels(ctx, m1, m2, f)
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: %s: %w", node, err)
	}
	logSkipped(env, node, skipped)
	return nodes.One(m, nil)
}

// mergeCLIPs runs sd.MergeCLIPs, leaving position ids and logit scales alone as
// ComfyUI's CLIP merges do (forgeflow's text models hold neither as a parameter).
func mergeCLIPs(ctx context.Context, env *nodes.Env, node string, c1, c2 *sd.CLIP, self, other float64) (nodes.Result, error) {
	c, skipped, err := sd.MergeCLIPs(ctx, c1, c2, func(key string) (float64, float64, bool) {
		if strings.HasSuffix(key, ".position_ids") || strings.HasSuffix(key, ".logit_scale") {
			return 0, 0, false
		}
		return self, other, true
	})
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: %s: %w", node, err)
	}
	logSkipped(env, node, skipped)
	return nodes.One(c, nil)
}

// every applies (self, other) to every parameter.
func every(self, other float64) sd.MergeFunc {
	return func(string) (float64, float64, bool) { return self, other, true }
}

// ModelMergeSimple: model1·ratio + model2·(1−ratio).
type ModelMergeSimple struct {
	Model1 *sd.Model `input:"model1"`
	Model2 *sd.Model `input:"model2"`
	Ratio  float64   `input:"ratio"`
}

// Schema implements nodes.Typed.
func (*ModelMergeSimple) Schema() graph.Schema {
	return graph.Schema{Name: "ModelMergeSimple", DisplayName: "ModelMergeSimple", Category: mergeCategory,
		PythonModule: "comfy_extras.nodes_model_merging",
		Inputs:       []graph.Input{socket("model1", "MODEL"), socket("model2", "MODEL"), ratioInput("ratio")},
		Outputs:      outputs("MODEL")}
}

// Run implements nodes.Typed.
func (n *ModelMergeSimple) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return mergeModels(ctx, env, "ModelMergeSimple", n.Model1, n.Model2, every(n.Ratio, 1-n.Ratio))
}

// ModelMergeSubtract: (model1 − model2)·multiplier, as ComfyUI's add_patches(−m, m)
// computes it.
type ModelMergeSubtract struct {
	Model1     *sd.Model `input:"model1"`
	Model2     *sd.Model `input:"model2"`
	Multiplier float64   `input:"multiplier"`
}

// Schema implements nodes.Typed.
func (*ModelMergeSubtract) Schema() graph.Schema {
	return graph.Schema{Name: "ModelMergeSubtract", DisplayName: "ModelMergeSubtract", Category: mergeCategory,
		PythonModule: "comfy_extras.nodes_model_merging",
		Inputs:       []graph.Input{socket("model1", "MODEL"), socket("model2", "MODEL"), multiplierInput()},
		Outputs:      outputs("MODEL")}
}

// Run implements nodes.Typed.
func (n *ModelMergeSubtract) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return mergeModels(ctx, env, "ModelMergeSubtract", n.Model1, n.Model2, every(n.Multiplier, -n.Multiplier))
}

// ModelMergeAdd: model1 + model2.
type ModelMergeAdd struct {
	Model1 *sd.Model `input:"model1"`
	Model2 *sd.Model `input:"model2"`
}

// Schema implements nodes.Typed.
func (*ModelMergeAdd) Schema() graph.Schema {
	return graph.Schema{Name: "ModelMergeAdd", DisplayName: "ModelMergeAdd", Category: mergeCategory,
		PythonModule: "comfy_extras.nodes_model_merging",
		Inputs:       []graph.Input{socket("model1", "MODEL"), socket("model2", "MODEL")},
		Outputs:      outputs("MODEL")}
}

// Run implements nodes.Typed.
func (n *ModelMergeAdd) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return mergeModels(ctx, env, "ModelMergeAdd", n.Model1, n.Model2, every(1, 1))
}

// CLIPMergeSimple: clip1·ratio + clip2·(1−ratio).
type CLIPMergeSimple struct {
	CLIP1 *sd.CLIP `input:"clip1"`
	CLIP2 *sd.CLIP `input:"clip2"`
	Ratio float64  `input:"ratio"`
}

// Schema implements nodes.Typed.
func (*CLIPMergeSimple) Schema() graph.Schema {
	return graph.Schema{Name: "CLIPMergeSimple", DisplayName: "CLIPMergeSimple", Category: mergeCategory,
		PythonModule: "comfy_extras.nodes_model_merging",
		Inputs:       []graph.Input{socket("clip1", "CLIP"), socket("clip2", "CLIP"), ratioInput("ratio")},
		Outputs:      outputs("CLIP")}
}

// Run implements nodes.Typed.
func (n *CLIPMergeSimple) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return mergeCLIPs(ctx, env, "CLIPMergeSimple", n.CLIP1, n.CLIP2, n.Ratio, 1-n.Ratio)
}

// CLIPMergeSubtract: (clip1 − clip2)·multiplier.
type CLIPMergeSubtract struct {
	CLIP1      *sd.CLIP `input:"clip1"`
	CLIP2      *sd.CLIP `input:"clip2"`
	Multiplier float64  `input:"multiplier"`
}

// Schema implements nodes.Typed.
func (*CLIPMergeSubtract) Schema() graph.Schema {
	return graph.Schema{Name: "CLIPMergeSubtract", DisplayName: "CLIPMergeSubtract", Category: mergeCategory,
		PythonModule: "comfy_extras.nodes_model_merging",
		Inputs:       []graph.Input{socket("clip1", "CLIP"), socket("clip2", "CLIP"), multiplierInput()},
		Outputs:      outputs("CLIP")}
}

// Run implements nodes.Typed.
func (n *CLIPMergeSubtract) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return mergeCLIPs(ctx, env, "CLIPMergeSubtract", n.CLIP1, n.CLIP2, n.Multiplier, -n.Multiplier)
}

// CLIPMergeAdd: clip1 + clip2.
type CLIPMergeAdd struct {
	CLIP1 *sd.CLIP `input:"clip1"`
	CLIP2 *sd.CLIP `input:"clip2"`
}

// Schema implements nodes.Typed.
func (*CLIPMergeAdd) Schema() graph.Schema {
	return graph.Schema{Name: "CLIPMergeAdd", DisplayName: "CLIPMergeAdd", Category: mergeCategory,
		PythonModule: "comfy_extras.nodes_model_merging",
		Inputs:       []graph.Input{socket("clip1", "CLIP"), socket("clip2", "CLIP")},
		Outputs:      outputs("CLIP")}
}

// Run implements nodes.Typed.
func (n *CLIPMergeAdd) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return mergeCLIPs(ctx, env, "CLIPMergeAdd", n.CLIP1, n.CLIP2, 1, 1)
}

// blockMerge is ModelMergeBlocks and its per-architecture subclasses: one ratio per
// key prefix under "diffusion_model."; a parameter takes the ratio of the longest
// prefix it starts with (the first of equal ones), else the first ratio (ComfyUI's
// default_ratio, the first keyword argument: the first ratio of the schema's order).
type blockMerge struct {
	schema graph.Schema
}

// newBlockMerge builds the node for the prefixes, in input order. A prefix written
// "name{a-b}suffix" stands for name<a>suffix … name<b>suffix.
func newBlockMerge(name, category string, prefixes ...string) *blockMerge {
	s := graph.Schema{Name: name, DisplayName: name, Category: category,
		Inputs:  []graph.Input{socket("model1", "MODEL"), socket("model2", "MODEL")},
		Outputs: outputs("MODEL")}
	if category == mergeCategory {
		s.PythonModule = "comfy_extras.nodes_model_merging"
	} else {
		s.PythonModule = "comfy_extras.nodes_model_merging_model_specific"
	}
	for _, p := range prefixes {
		for _, q := range expandRange(p) {
			s.Inputs = append(s.Inputs, ratioInput(q))
		}
	}
	return &blockMerge{schema: s}
}

// expandRange expands one "name{a-b}suffix" pattern (or returns p).
func expandRange(p string) []string {
	head, rest, ok := strings.Cut(p, "{")
	if !ok {
		return []string{p}
	}
	span, tail, _ := strings.Cut(rest, "}")
	a, b, _ := strings.Cut(span, "-")
	from, _ := strconv.Atoi(a)
	to, _ := strconv.Atoi(b)
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, head+strconv.Itoa(i)+tail)
	}
	return out
}

// Schema implements nodes.Node.
func (n *blockMerge) Schema() *graph.Schema { return &n.schema }

// Run implements nodes.Node.
func (n *blockMerge) Run(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
	m1, ok1 := in["model1"].(*sd.Model)
	m2, ok2 := in["model2"].(*sd.Model)
	if !ok1 || !ok2 {
		return nodes.Result{}, fmt.Errorf("builtin: %s: model1 and model2 must be MODELs", n.schema.Name)
	}
	type ratio struct {
		prefix string
		r      float64
	}
	var ratios []ratio
	for _, inp := range n.schema.Inputs[2:] {
		r, err := in.Float(inp.Name)
		if err != nil {
			return nodes.Result{}, fmt.Errorf("builtin: %s: %w", n.schema.Name, err)
		}
		ratios = append(ratios, ratio{inp.Name, r})
	}
	return mergeModels(ctx, env, n.schema.Name, m1, m2, func(key string) (float64, float64, bool) {
		k := strings.TrimPrefix(key, "diffusion_model.")
		r, best := ratios[0].r, 0
		for _, x := range ratios {
			if strings.HasPrefix(k, x.prefix) && len(x.prefix) > best {
				r, best = x.r, len(x.prefix)
			}
		}
		return r, 1 - r, true
	})
}

// blockMerges are ModelMergeBlocks and the per-architecture block merges, with their
// prefixes in ComfyUI's input order.
func blockMerges() []nodes.Node {
	const specific = mergeCategory + "/model_specific"
	sd1 := []string{"time_embed.", "label_emb.", "input_blocks.{0-11}.", "middle_block.{0-2}.", "output_blocks.{0-11}.", "out."}
	sd3 := func(blocks string) []string {
		return []string{"pos_embed.", "x_embedder.", "context_embedder.", "y_embedder.", "t_embedder.", "joint_blocks.{0-" + blocks + "}.", "final_layer."}
	}
	cosmos := func(blocks string) []string {
		return []string{"pos_embedder.", "extra_pos_embedder.", "x_embedder.", "t_embedder.", "affline_norm.", "blocks.block{0-" + blocks + "}.", "final_layer."}
	}
	predict2 := func(blocks string) []string {
		return []string{"pos_embedder.", "x_embedder.", "t_embedder.", "t_embedding_norm.", "blocks.{0-" + blocks + "}.", "final_layer."}
	}
	wan := newBlockMerge("ModelMergeWAN2_1", specific, "patch_embedding.", "time_embedding.", "time_projection.", "text_embedding.", "img_emb.", "blocks.{0-39}.", "head.")
	wan.schema.Description = "1.3B model has 30 blocks, 14B model has 40 blocks. Image to video model has the extra img_emb."
	return []nodes.Node{
		newBlockMerge("ModelMergeBlocks", mergeCategory, "input", "middle", "out"),
		newBlockMerge("ModelMergeSD1", specific, sd1...),
		newBlockMerge("ModelMergeSD2", specific, sd1...),
		newBlockMerge("ModelMergeSDXL", specific, "time_embed.", "label_emb.", "input_blocks.{0-8}", "middle_block.{0-2}", "output_blocks.{0-8}", "out."),
		newBlockMerge("ModelMergeSD3_2B", specific, sd3("23")...),
		newBlockMerge("ModelMergeSD35_Large", specific, sd3("37")...),
		newBlockMerge("ModelMergeFlux1", specific, "img_in.", "time_in.", "guidance_in", "vector_in.", "txt_in.", "double_blocks.{0-18}.", "single_blocks.{0-37}.", "final_layer."),
		newBlockMerge("ModelMergeAuraflow", specific, "init_x_linear.", "positional_encoding", "cond_seq_linear.", "register_tokens", "t_embedder.", "double_layers.{0-3}.", "single_layers.{0-31}.", "modF.", "final_linear."),
		newBlockMerge("ModelMergeMochiPreview", specific, "pos_frequencies.", "t_embedder.", "t5_y_embedder.", "t5_yproj.", "blocks.{0-47}.", "final_layer."),
		newBlockMerge("ModelMergeLTXV", specific, "patchify_proj.", "adaln_single.", "caption_projection.", "transformer_blocks.{0-27}.", "scale_shift_table", "proj_out."),
		newBlockMerge("ModelMergeCosmos7B", specific, cosmos("27")...),
		newBlockMerge("ModelMergeCosmos14B", specific, cosmos("35")...),
		newBlockMerge("ModelMergeCosmosPredict2_2B", specific, predict2("27")...),
		newBlockMerge("ModelMergeCosmosPredict2_14B", specific, predict2("35")...),
		wan,
		newBlockMerge("ModelMergeQwenImage", specific, "pos_embeds.", "img_in.", "txt_norm.", "txt_in.", "time_text_embed.", "transformer_blocks.{0-59}.", "proj_out."),
	}
}

// CLIPSave writes each text encoder of CLIP as its own file in the transformers layout,
// "<prefix>_<encoder>_<counter:05>_.safetensors" (clip/ComfyUI_clip_l_00001_…), with
// ComfyUI's metadata ("format": "pt", the prompt and workflow).
type CLIPSave struct {
	opts           Options
	CLIP           *sd.CLIP `input:"clip"`
	FilenamePrefix string   `input:"filename_prefix"`
}

// Schema implements nodes.Typed.
func (*CLIPSave) Schema() graph.Schema {
	return graph.Schema{
		Name: "CLIPSave", DisplayName: "CLIPSave", Category: mergeCategory,
		PythonModule: "comfy_extras.nodes_model_merging",
		OutputNode:   true,
		Inputs: append([]graph.Input{
			socket("clip", "CLIP"),
			{Name: "filename_prefix", Type: graph.TypeString, Default: "clip/ComfyUI"},
		}, hiddenPromptInputs...),
	}
}

// Run implements nodes.Typed.
func (n *CLIPSave) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	files, err := n.CLIP.CLIPFiles()
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: CLIPSave: %w", err)
	}
	for _, f := range files {
		_, err := saveModelFile(ctx, env, n.opts, "CLIPSave", n.FilenamePrefix+"_"+f.Name, func(w io.Writer, _ string, meta map[string]string) error {
			if len(meta) > 0 {
				meta["format"] = "pt"
			}
			return f.Write(w, meta)
		})
		if err != nil {
			return nodes.Result{}, err
		}
	}
	return nodes.Result{}, nil
}
