package builtin

import (
	"errors"
	"image"
	"image/color"
	"slices"
	"testing"

	"github.com/forgeflow/forgeflow/nodes"
)

// TestWebcamCapture checks that WebcamCapture loads the uploaded capture as LoadImage
// does and, as ComfyUI's load_capture, ignores width, height and capture_on_queue (the
// front end draws the capture at that size before uploading it).
func TestWebcamCapture(t *testing.T) {
	opts, d := loadOpts(t)
	src := image.NewNRGBA(image.Rect(0, 0, 3, 2))
	for i := range src.Pix {
		src.Pix[i] = uint8(i * 11)
	}
	src.Set(0, 0, color.NRGBA{10, 20, 30, 255})
	writeInput(t, d.Temp, "webcam/cap.png", encodePNGImage(t, src))
	name := "webcam/cap.png [temp]"
	ref, _ := loadImage(t, opts, name)
	for _, size := range [][2]int64{{0, 0}, {640, 480}, {1, 1}} {
		res, err := run(t, opts, nil, "WebcamCapture", nodes.Inputs{"image": name, "width": size[0], "height": size[1], "capture_on_queue": size[0] == 0})
		if err != nil {
			t.Fatal(err)
		}
		im := res.Outputs[0].(*Image)
		if im.Width != 3 || im.Height != 2 || im.Channels != 3 || !slices.Equal(im.Pix, ref.Pix) {
			t.Fatalf("size %v: %dx%dx%d, want LoadImage's 3x2x3", size, im.Width, im.Height, im.Channels)
		}
	}
	r := newTestRegistry(t, opts)
	n, _ := r.Lookup("WebcamCapture")
	in := nodes.Inputs{"image": "../secret.png", "width": int64(0), "height": int64(0), "capture_on_queue": true}
	err := n.(nodes.InputValidator).ValidateInputs(&nodes.Env{}, in)
	var inv *InvalidFileError
	if !errors.As(err, &inv) || err.Error() != "Invalid image file: ../secret.png" {
		t.Fatalf("ValidateInputs: %v", err)
	}
	if _, err := run(t, opts, nil, "WebcamCapture", in); err == nil {
		t.Fatal("a name outside the input folder was read")
	}
	in["image"] = name
	h, err := n.(nodes.IsChanger).IsChanged(&nodes.Env{}, in)
	if err != nil || len(h) != 64 {
		t.Fatalf("IsChanged %q %v", h, err)
	}
}
