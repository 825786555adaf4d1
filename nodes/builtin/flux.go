package builtin

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// Flux conditioning nodes (comfy_extras/nodes_flux.py FluxGuidance, FluxDisableGuidance,
// FluxKontextImageScale, FluxKontextMultiReferenceLatentMethod) and the edit models'
// ReferenceLatent (comfy_extras/nodes_edit_model.py). They set values on every entry of
// a CONDITIONING, as node_helpers.conditioning_set_values does; the model reads them
// when it samples (sd's Flux MODEL).

const editModelModule = "comfy_extras.nodes_edit_model"

// fluxSchema is an io.Schema node of nodes_flux.py with one CONDITIONING output.
func fluxSchema(name, description string, inputs ...graph.Input) graph.Schema {
	s := graph.Schema{Name: name, Category: "advanced/conditioning/flux", Description: description, PythonModule: fluxModule,
		Inputs: inputs, Outputs: outputs("CONDITIONING"), Extra: v3Extra(1, nil)}
	return s
}

// guidanceInput is FluxGuidance's guidance scale.
func guidanceInput() graph.Input {
	return graph.Input{Name: "guidance", Type: graph.TypeFloat, Default: 3.5, Min: graph.Num(0.0), Max: graph.Num(100.0), Step: graph.Num(0.1)}
}

// FluxGuidance is ComfyUI's FluxGuidance: the distilled guidance scale Flux dev's
// guidance embedding receives (3.5 when no node sets one).
type FluxGuidance struct {
	Conditioning sd.Conditioning `input:"conditioning"`
	Guidance     float64         `input:"guidance"`
}

// Schema implements nodes.Typed.
func (*FluxGuidance) Schema() graph.Schema {
	return fluxSchema("FluxGuidance", "", socketV3("conditioning", "CONDITIONING"), guidanceInput())
}

// Run implements nodes.Typed: {"guidance": value} on every entry, replacing a
// FluxDisableGuidance before it.
func (n *FluxGuidance) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(withEntries(n.Conditioning, func(e *sd.Cond) {
		g := n.Guidance
		e.Guidance, e.NoGuidance = &g, false
	}), nil)
}

// FluxDisableGuidance is ComfyUI's FluxDisableGuidance: no guidance value reaches the
// model at all ({"guidance": None}).
type FluxDisableGuidance struct {
	Conditioning sd.Conditioning `input:"conditioning"`
}

// Schema implements nodes.Typed.
func (*FluxDisableGuidance) Schema() graph.Schema {
	return fluxSchema("FluxDisableGuidance", "This node completely disables the guidance embed on Flux and Flux like models",
		socketV3("conditioning", "CONDITIONING"))
}

// Run implements nodes.Typed.
func (n *FluxDisableGuidance) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(withEntries(n.Conditioning, func(e *sd.Cond) { e.Guidance, e.NoGuidance = nil, true }), nil)
}

// ReferenceLatent is ComfyUI's ReferenceLatent: the latent joins the entries'
// reference latents, which edit models (Flux Kontext) see as extra image tokens.
// Chained nodes add one reference each; without a latent the conditioning passes
// unchanged.
type ReferenceLatent struct {
	Conditioning sd.Conditioning `input:"conditioning"`
	Latent       *sd.Latent      `input:"latent"`
}

// Schema implements nodes.Typed.
func (*ReferenceLatent) Schema() graph.Schema {
	latent := socketV3("latent", "LATENT")
	latent.Section = graph.Optional
	return graph.Schema{
		Name: "ReferenceLatent", Category: "advanced/conditioning/edit_models", PythonModule: editModelModule,
		Description: "This node sets the guiding latent for an edit model. If the model supports it you can chain multiple to set multiple reference images.",
		Inputs:      []graph.Input{socketV3("conditioning", "CONDITIONING"), latent},
		Outputs:     outputs("CONDITIONING"),
		Extra:       v3Extra(1, nil),
	}
}

// Run implements nodes.Typed (conditioning_set_values with append=True).
func (n *ReferenceLatent) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	if n.Latent == nil {
		return nodes.One(n.Conditioning, nil)
	}
	return nodes.One(withEntries(n.Conditioning, func(e *sd.Cond) {
		e.ReferenceLatents = append(slices.Clip(e.ReferenceLatents), n.Latent.Samples)
	}), nil)
}

// FluxKontextMultiReferenceLatentMethod is ComfyUI's node of that name: how Flux places
// several reference latents' tokens (offset: beside or below each other, index: one
// position index each, uxo/uno: diagonally past the image).
type FluxKontextMultiReferenceLatentMethod struct {
	Conditioning sd.Conditioning `input:"conditioning"`
	Method       string          `input:"reference_latents_method"`
}

// Schema implements nodes.Typed.
func (*FluxKontextMultiReferenceLatentMethod) Schema() graph.Schema {
	s := fluxSchema("FluxKontextMultiReferenceLatentMethod", "",
		socketV3("conditioning", "CONDITIONING"), comboV3("reference_latents_method", "offset", "index", "uxo/uno"))
	s.Extra["experimental"] = true
	return s
}

// Run implements nodes.Typed. As ComfyUI, any value naming uxo or uso means "uxo";
// another value outside the list (a V3 combo is not checked against it) reaches the
// model, which refuses it when it samples.
func (n *FluxKontextMultiReferenceLatentMethod) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	m := n.Method
	if strings.Contains(m, "uxo") || strings.Contains(m, "uso") {
		m = "uxo"
	}
	return nodes.One(withEntries(n.Conditioning, func(e *sd.Cond) { e.ReferenceMethod = m }), nil)
}

// kontextResolutions are nodes_flux.py's PREFERED_KONTEXT_RESOLUTIONS (width, height):
// about a megapixel each, sides multiples of 16.
var kontextResolutions = [][2]int{
	{672, 1568}, {688, 1504}, {720, 1456}, {752, 1392}, {800, 1328}, {832, 1248}, {880, 1184}, {944, 1104},
	{1024, 1024}, {1104, 944}, {1184, 880}, {1248, 832}, {1328, 800}, {1392, 752}, {1456, 720}, {1504, 688}, {1568, 672},
}

// FluxKontextImageScale is ComfyUI's FluxKontextImageScale: the image resized (Lanczos,
// centre crop) to the Kontext training resolution nearest its aspect ratio.
type FluxKontextImageScale struct {
	Image *Image `input:"image"`
}

// Schema implements nodes.Typed.
func (*FluxKontextImageScale) Schema() graph.Schema {
	return graph.Schema{
		Name: "FluxKontextImageScale", Category: "advanced/conditioning/flux", PythonModule: fluxModule,
		Description: "This node resizes the image to one that is more optimal for flux kontext.",
		Inputs:      []graph.Input{socketV3("image", "IMAGE")},
		Outputs:     outputs("IMAGE"),
		Extra:       v3Extra(1, nil),
	}
}

// Run implements nodes.Typed.
func (n *FluxKontextImageScale) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	im := n.Image
	if im.Width == 0 || im.Height == 0 {
		return nodes.Result{}, fmt.Errorf("builtin: FluxKontextImageScale: cannot scale an empty %dx%d image", im.Width, im.Height)
	}
	w, h := kontextSize(im.Width, im.Height)
	return nodes.One(upscale(im, w, h, "lanczos", "center"))
}

// kontextSize picks the entry of kontextResolutions whose aspect ratio is nearest
// width/height; ties go to the smaller width, as Python's min over (difference, w, h)
// tuples does.
func kontextSize(width, height int) (int, int) {
	aspect := float64(width) / float64(height)
	best, bestDiff := kontextResolutions[0], math.Inf(1)
	for _, r := range kontextResolutions {
		d := math.Abs(aspect - float64(r[0])/float64(r[1]))
		if d < bestDiff || (d == bestDiff && (r[0] < best[0] || r[0] == best[0] && r[1] < best[1])) {
			best, bestDiff = r, d
		}
	}
	return best[0], best[1]
}

// Interface guards.
var (
	_ nodes.Typed = (*FluxGuidance)(nil)
	_ nodes.Typed = (*FluxDisableGuidance)(nil)
	_ nodes.Typed = (*ReferenceLatent)(nil)
	_ nodes.Typed = (*FluxKontextMultiReferenceLatentMethod)(nil)
	_ nodes.Typed = (*FluxKontextImageScale)(nil)
)
