package detect

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/torch/torchtest"
)

// writeTorchZip writes ts as a torch.save zip archive (float32 zeros), with the state
// dict under "state_dict" as Lightning-era .ckpt files have it.
func writeTorchZip(t *testing.T, path string, ts tensors) {
	t.Helper()
	var tts []torchtest.Tensor
	for _, ti := range ts {
		n, _ := weights.ShapeElements(ti.Shape, 1<<40)
		tts = append(tts, torchtest.Tensor{Name: ti.Name, DType: weights.F32, Shape: ti.Shape, Data: make([]byte, 4*n)})
	}
	b, err := torchtest.Zip(tts, "state_dict")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// A legacy-style SD1 checkpoint: .ckpt (torch zip) with the single-file prefixes.
func TestDetectFileCkpt(t *testing.T) {
	tinyVAE := vaeSpec{ch: 8, z: 4, nres: 1, mult: []int{1, 2}, quant: true}
	ts := join(pre("model.diffusion_model.", tinyUNet.build()), pre("first_stage_model.", tinyVAE.build()),
		pre("cond_stage_model.transformer.", clipHF(2, 16, 64, false)))
	p := filepath.Join(t.TempDir(), "v1-tiny.ckpt")
	writeTorchZip(t, p, ts)
	m, err := DetectFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if m.Kind != KindCheckpoint || m.Family != FamilySD1 || m.VAE == nil || len(m.TextEncoders) != 1 ||
		m.Diffusion.UNet.ContextDim != 32 || m.TextEncoders[0].Prefix != "cond_stage_model.transformer.text_model." {
		t.Fatalf("kind %s family %s vae %v encoders %+v", m.Kind, m.Family, m.VAE != nil, m.TextEncoders)
	}
}
