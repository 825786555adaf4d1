package builtin

import (
	"context"

	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// WebcamCapture is comfy_extras/nodes_webcam.py WebcamCapture ("Webcam Capture"). The
// front end draws the camera frame at width×height (0 keeps the camera's own size, the
// front end fills it in), uploads it to the input or temp folder and queues its name as
// the "image" value; the server loads that file exactly as LoadImage does and returns
// its IMAGE. As in ComfyUI, width, height and capture_on_queue do not change what the
// server computes: load_capture ignores them.
type WebcamCapture struct {
	imageFile
	Width          int  `input:"width"`
	Height         int  `input:"height"`
	CaptureOnQueue bool `input:"capture_on_queue"`
}

// Schema implements nodes.Typed. "image" is a WEBCAM widget whose value is the name of
// the uploaded capture ("webcam/123.png [temp]"), checked by ValidateInputs.
func (*WebcamCapture) Schema() graph.Schema {
	return graph.Schema{
		Name: "WebcamCapture", DisplayName: "Webcam Capture", Category: "image",
		PythonModule: "comfy_extras.nodes_webcam",
		Inputs: []graph.Input{
			{Name: "image", Type: "WEBCAM", CustomValidation: true},
			{Name: "width", Type: graph.TypeInt, Default: 0, Min: graph.Num(0), Max: graph.Num(MaxResolution), Step: graph.Num(1)},
			{Name: "height", Type: graph.TypeInt, Default: 0, Min: graph.Num(0), Max: graph.Num(MaxResolution), Step: graph.Num(1)},
			{Name: "capture_on_queue", Type: graph.TypeBoolean, Default: true},
		},
		Outputs: outputs("IMAGE"),
	}
}

// Run implements nodes.Typed (WebcamCapture.load_capture: LoadImage.load_image's image).
func (n *WebcamCapture) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	r, err := (&LoadImage{n.imageFile}).Run(ctx, env)
	if err != nil {
		return nodes.Result{}, err
	}
	return nodes.One(r.Outputs[0], nil)
}

var _ nodes.Typed = (*WebcamCapture)(nil)
