package builtin

import (
	"context"
	"image/png"
	"strconv"
	"time"

	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// SaveImageWebsocket is the websocket_image_save node ComfyUI 0.3.64 lists (from its
// custom_nodes example, which API clients such as websockets_api_example_ws_images.py
// rely on): each image of the batch goes to the client that queued the prompt as a PNG
// preview frame instead of a file. ComfyUI sends it through the progress hook, so every
// image comes with a progress event (value = its index, max = the batch) and the frame
// type follows the client's supports_preview_metadata flag as for sampling previews.
type SaveImageWebsocket struct {
	Images *Image `input:"images"`
}

// Schema implements nodes.Typed.
func (*SaveImageWebsocket) Schema() graph.Schema {
	return graph.Schema{
		Name: "SaveImageWebsocket", DisplayName: "SaveImageWebsocket", Category: "api/image",
		PythonModule: "custom_nodes.websocket_image_save", OutputNode: true,
		Inputs: []graph.Input{socket("images", "IMAGE")},
	}
}

// IsChanged implements nodes.Typed's change hook as ComfyUI's IS_CHANGED (time.time()):
// never the same twice, so a prompt queued again sends its images again rather than
// being answered from the cache with nothing on the websocket.
func (*SaveImageWebsocket) IsChanged(env *nodes.Env) (string, error) {
	return strconv.FormatInt(time.Now().UnixNano(), 10), nil
}

// Run implements nodes.Typed. The pixels are the 8-bit conversion SaveImage writes; the
// PNG is written at the fastest level, as ComfyUI's send_image uses compress_level 1.
func (n *SaveImageWebsocket) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	enc := &png.Encoder{CompressionLevel: png.BestSpeed}
	for b := 0; b < n.Images.Batch; b++ {
		if err := ctx.Err(); err != nil {
			return nodes.Result{}, err
		}
		data, err := encodePNG(enc, n.Images, b, nil)
		if err != nil {
			return nodes.Result{}, err
		}
		if env == nil {
			continue
		}
		if env.Progress != nil {
			env.Progress(b, n.Images.Batch)
		}
		if env.Preview != nil {
			env.Preview(nodes.PreviewImage{Format: "PNG", Data: data})
		}
	}
	return nodes.Result{}, nil
}

var _ nodes.Typed = (*SaveImageWebsocket)(nil)
