package sd

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/torch/torchtest"
)

// writeTorchCheckpoint writes tensors as torch.save does since PyTorch 1.6, every
// tensor a HalfStorage of its own under "state_dict".
func writeTorchCheckpoint(t *testing.T, path string, ts []RandomTensor, seed uint64) {
	t.Helper()
	var tts []torchtest.Tensor
	for _, x := range ts {
		vals := x.Values(seed)
		data := make([]byte, 2*len(vals))
		if err := gpu.EncodeFloat32(gpu.F16, data, vals); err != nil {
			t.Fatal(err)
		}
		shape := make([]int64, len(x.Shape))
		for i, d := range x.Shape {
			shape[i] = int64(d)
		}
		tts = append(tts, torchtest.Tensor{Name: x.Name, DType: weights.F16, Shape: shape, Data: data})
	}
	b, err := torchtest.Zip(tts, "state_dict")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestLoadCkpt loads the same tiny SD1 checkpoint from a PyTorch .ckpt and from
// safetensors and checks that the VAE decodes identically.
func TestLoadCkpt(t *testing.T) {
	rt := ckRuntime(t)
	dir := t.TempDir()
	spec := tinySD1(71)
	ts, err := spec.Tensors()
	if err != nil {
		t.Fatal(err)
	}
	ckptPath, stPath := filepath.Join(dir, "m.ckpt"), filepath.Join(dir, "m.safetensors")
	writeTorchCheckpoint(t, ckptPath, ts, spec.Seed)
	writeSpec(t, stPath, spec)
	a, err := LoadCheckpoint(rt, ckptPath, LoadOptions{SkipCLIP: true})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := LoadCheckpoint(rt, stPath, LoadOptions{SkipCLIP: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if a.Family != b.Family || a.Model.ADM != b.Model.ADM {
		t.Fatalf(".ckpt loads as %s, safetensors as %s", a.Family, b.Family)
	}
	lat, _ := rt.FromFloat32(ckRandVals(72, 4*4*4), 1, 4, 4, 4)
	defer lat.Release()
	ia, err := a.VAE.Decode(context.Background(), lat)
	if err != nil {
		t.Fatal(err)
	}
	ib, err := b.VAE.Decode(context.Background(), lat)
	if err != nil {
		t.Fatal(err)
	}
	for i := range ia.Pix {
		if ia.Pix[i] != ib.Pix[i] {
			t.Fatalf("pixel %d: .ckpt %v, safetensors %v", i, ia.Pix[i], ib.Pix[i])
		}
	}
}
