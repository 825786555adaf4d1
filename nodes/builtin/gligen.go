package builtin

import (
	"context"
	"errors"
	"fmt"

	"github.com/forgeflow/forgeflow/diffusion/gligen"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// GLIGEN nodes (nodes.py GLIGENLoader, GLIGENTextBoxApply). GLIGEN is a *gligen.Model
// (codex/vision.md).

func checkGLIGEN(m *gligen.Model) error {
	if m == nil {
		return errors.New("builtin: missing GLIGEN")
	}
	return nil
}

// GLIGENLoader loads a GLIGEN model file from the gligen folder.
type GLIGENLoader struct {
	env        *sdEnv
	GLIGENName string `input:"gligen_name,unchecked"`
}

// Schema implements nodes.Typed.
func (n *GLIGENLoader) Schema() graph.Schema {
	return graph.Schema{
		Name: "GLIGENLoader", DisplayName: "GLIGENLoader", Category: "loaders",
		Inputs:  []graph.Input{n.env.modelCombo("gligen_name", "gligen", "")},
		Outputs: outputs("GLIGEN"),
	}
}

// Run implements nodes.Typed (comfy/sd.py load_gligen).
func (n *GLIGENLoader) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	f, err := loadModelFile(ctx, n.env, "gligen", n.GLIGENName, "gligen", gligen.LoadFile)
	if err != nil {
		return nodes.Result{}, err
	}
	return nodes.One(f.Model, nil)
}

// GLIGENTextBoxApply grounds a phrase in a rectangle: the text's unprojected pooled
// CLIP embedding and the box (in pixels, stored in latent units) join every entry's
// GLIGEN boxes.
type GLIGENTextBoxApply struct {
	Conditioning sd.Conditioning `input:"conditioning_to"`
	CLIP         *sd.CLIP        `input:"clip"`
	Model        *gligen.Model   `input:"gligen_textbox_model"`
	Text         string          `input:"text"`
	Width        int             `input:"width"`
	Height       int             `input:"height"`
	X            int             `input:"x"`
	Y            int             `input:"y"`
}

// Schema implements nodes.Typed.
func (*GLIGENTextBoxApply) Schema() graph.Schema {
	size := func(name string, def, min int) graph.Input {
		return graph.Input{Name: name, Type: graph.TypeInt, Default: def, Min: graph.Num(min), Max: graph.Num(MaxResolution), Step: graph.Num(8)}
	}
	return graph.Schema{
		Name: "GLIGENTextBoxApply", DisplayName: "GLIGENTextBoxApply", Category: "conditioning/gligen",
		Inputs: []graph.Input{socket("conditioning_to", "CONDITIONING"), socket("clip", "CLIP"),
			socket("gligen_textbox_model", "GLIGEN"), prompt("text"),
			size("width", 64, 8), size("height", 64, 8), size("x", 0, 0), size("y", 0, 0)},
		Outputs: outputs("CONDITIONING"),
	}
}

// Run implements nodes.Typed (GLIGENTextBoxApply.append).
func (n *GLIGENTextBoxApply) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	enc, err := n.CLIP.WithoutPooledProjection().EncodeText(ctx, n.Text)
	if err != nil {
		return nodes.Result{}, err
	}
	defer enc.Release()
	if enc.Pooled == nil || enc.Pooled.Rank() != 2 || enc.Pooled.Dim(0) != 1 {
		return nodes.Result{}, errors.New("builtin: GLIGENTextBoxApply: the CLIP gives no pooled text embedding")
	}
	pooled, err := enc.Pooled.Float32()
	if err != nil {
		return nodes.Result{}, err
	}
	if len(pooled) != n.Model.KeyDim {
		return nodes.Result{}, fmt.Errorf("builtin: GLIGENTextBoxApply: the CLIP's pooled embedding is %d wide, the GLIGEN model takes %d", len(pooled), n.Model.KeyDim)
	}
	box := gligen.Box{Pooled: pooled, Height: n.Height / 8, Width: n.Width / 8, Y: n.Y / 8, X: n.X / 8}
	out := make(sd.Conditioning, len(n.Conditioning))
	for i, c := range n.Conditioning {
		out[i] = c.AddGLIGENBox(n.Model, box)
	}
	return nodes.One(out, nil)
}

// Interface guards.
var (
	_ nodes.Typed = (*GLIGENLoader)(nil)
	_ nodes.Typed = (*GLIGENTextBoxApply)(nil)
)
