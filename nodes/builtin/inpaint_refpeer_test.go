package builtin

import (
	"fmt"
	"math"
	"testing"

	"github.com/forgeflow/forgeflow/weights/safetensors"
)

// TestInpaintNodesAgainstComfyUI compares what VAEEncodeForInpaint (grow_mask_by 0, 5,
// 6) and InpaintModelConditioning hand to the VAE and return as masks with ComfyUI's
// nodes.py on the same image (20×28, not a multiple of 8) and soft mask (10×14,
// resized bilinearly): tools/refpeer/controlnet_ref.py recorded them with a stub VAE.
func TestInpaintNodesAgainstComfyUI(t *testing.T) {
	fx, err := safetensors.Open("testdata/inpaint_refpeer.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	defer fx.Close()
	get := func(name string) []float32 {
		tn, err := fx.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		v, err := tn.Float32()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	px := &Image{Batch: 1, Height: 20, Width: 28, Channels: 3, Pix: get("in.px")}
	pm := &Mask{Batch: 1, Height: 10, Width: 14, Pix: get("in.pmask")}
	same := func(name string, got []float32) {
		t.Helper()
		want := get("out." + name)
		if len(got) != len(want) {
			t.Fatalf("%s: %d values, want %d", name, len(got), len(want))
		}
		worst := 0.0
		for i := range want {
			worst = max(worst, math.Abs(float64(got[i]-want[i])))
		}
		if worst > 1e-6 {
			t.Errorf("%s: max |Δ| %.3g", name, worst)
		}
	}
	in, err := prepareInpaint(px, pm, 8)
	if err != nil {
		t.Fatal(err)
	}
	if in.masked.Height != 16 || in.masked.Width != 24 {
		t.Fatalf("crop %dx%d, want 24x16", in.masked.Width, in.masked.Height)
	}
	for _, g := range []int{0, 5, 6} {
		same(fmt.Sprintf("vaeenc%d.pixels", g), in.masked.Pix)
		same(fmt.Sprintf("vaeenc%d.noise_mask", g), growMask(in.mask, g).Pix)
	}
	same("imc.concat_pixels", in.masked.Pix)
	same("imc.orig_pixels", px.Pix)
	same("imc.noise_mask", in.mask.Pix)
	same("imc.concat_mask", in.mask.Pix)
}
