package builtin

import (
	"context"
	"fmt"

	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// LoadImageOutput (nodes.py) and RebatchImages (comfy_extras/nodes_rebatch.py).

// LoadImageOutput is LoadImage with a combo the front end fills from the output folder:
// its values come annotated ("name.png [output]"), which LoadImage's file lookup
// resolves, so it runs as LoadImage does.
type LoadImageOutput struct{ LoadImage }

// Schema implements nodes.Typed.
func (*LoadImageOutput) Schema() graph.Schema {
	return graph.Schema{
		Name: "LoadImageOutput", DisplayName: "Load Image (from Outputs)", Category: "image",
		Description: "Load an image from the output folder. When the refresh button is clicked, the node will update the image list and automatically select the first image, allowing for easy iteration.",
		Inputs: []graph.Input{{Name: "image", Type: graph.TypeCombo, ComboV3: true, ImageUpload: true, CustomValidation: true,
			Extra: map[string]any{"image_folder": "output",
				"remote": map[string]any{"route": "/internal/files/output", "refresh_button": true, "control_after_refresh": "first"}}}},
		Outputs: outputs("IMAGE", "MASK"),
		Extra:   map[string]any{"experimental": true},
	}
}

// RebatchImages splits and joins image batches into batches of batch_size.
type RebatchImages struct {
	Images    []*Image `input:"images"`
	BatchSize []int    `input:"batch_size"`
}

// Schema implements nodes.Typed.
func (*RebatchImages) Schema() graph.Schema {
	name := "Rebatch Images"
	return graph.Schema{
		Name: "RebatchImages", DisplayName: name, Category: "image/batch", PythonModule: "comfy_extras.nodes_rebatch",
		InputIsList: true,
		Inputs: []graph.Input{socketV3("images", "IMAGE"),
			{Name: "batch_size", Type: graph.TypeInt, Default: 1, Min: graph.Num(1), Max: graph.Num(4096)}},
		Outputs: []graph.Output{{Type: "IMAGE", Name: "IMAGE", IsList: true}},
		Extra:   v3Extra(1, &name),
	}
}

// Run implements nodes.Typed (ImageRebatch.execute): every image of every input batch,
// in order, regrouped batch_size at a time (the first batch_size value counts); images
// of one output batch must share their size, as torch.cat requires.
func (n *RebatchImages) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	if len(n.BatchSize) == 0 || n.BatchSize[0] < 1 {
		return nodes.Result{}, fmt.Errorf("builtin: RebatchImages: batch_size %v, want one value of at least 1", n.BatchSize)
	}
	size := n.BatchSize[0]
	type ref struct {
		im *Image
		b  int
	}
	var all []ref
	for _, im := range n.Images {
		for b := 0; b < im.Batch; b++ {
			all = append(all, ref{im, b})
		}
	}
	var out []any
	for start := 0; start < len(all); start += size {
		if err := ctx.Err(); err != nil {
			return nodes.Result{}, err
		}
		group := all[start:min(start+size, len(all))]
		first := group[0].im
		batch, err := NewImage(len(group), first.Height, first.Width, first.Channels)
		if err != nil {
			return nodes.Result{}, err
		}
		for i, r := range group {
			if r.im.Height != first.Height || r.im.Width != first.Width || r.im.Channels != first.Channels {
				return nodes.Result{}, fmt.Errorf("builtin: RebatchImages: cannot batch a %dx%dx%d image with a %dx%dx%d one",
					r.im.Width, r.im.Height, r.im.Channels, first.Width, first.Height, first.Channels)
			}
			copy(batch.Frame(i), r.im.Frame(r.b))
		}
		out = append(out, batch)
	}
	return nodes.Outputs(out)
}

var (
	_ nodes.Typed = (*LoadImageOutput)(nil)
	_ nodes.Typed = (*RebatchImages)(nil)
)
