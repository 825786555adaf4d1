package sd

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

// WriteRandomDiffusers writes spec's random checkpoint as a diffusers pipeline folder
// in dir, for tests of DiffusersLoader: the UNet in diffusers' names by unetMap
// (diffusers name → original name without "model.diffusion_model.", as
// comfy/utils.py unet_to_diffusers gives it; where two diffusers names map to one
// original, the first in sort order is used), the VAE and, with textEncoder, the CLIP-L
// under their own names without prefix (the names VAELoader and CLIPLoader take, as
// they take diffusers' files), and a model_index.json. The values are the checkpoint's
// (drawn under the original names), stored as F16.
func WriteRandomDiffusers(dir string, spec RandomSpec, unetMap map[string]string, textEncoder bool) error {
	ts, err := spec.Tensors()
	if err != nil {
		return err
	}
	toDiffusers := map[string]string{}
	for dk, orig := range unetMap {
		if prev, ok := toDiffusers[orig]; !ok || dk < prev {
			toDiffusers[orig] = dk
		}
	}
	parts := map[string][]safetensors.Entry{}
	add := func(file, name string, x RandomTensor) {
		shape := make([]int64, len(x.Shape))
		for i, d := range x.Shape {
			shape[i] = int64(d)
		}
		parts[file] = append(parts[file], safetensors.Entry{Name: name, DType: weights.F16, Shape: shape, WriteData: func(w io.Writer) error {
			v := x.Values(spec.Seed)
			buf := make([]byte, 2*len(v))
			if err := gpu.EncodeFloat32(gpu.F16, buf, v); err != nil {
				return err
			}
			_, err := w.Write(buf)
			return err
		}})
	}
	for _, x := range ts {
		switch {
		case strings.HasPrefix(x.Name, unetPrefix):
			dk, ok := toDiffusers[strings.TrimPrefix(x.Name, unetPrefix)]
			if !ok {
				return fmt.Errorf("sd: the UNet map has no diffusers name for %s", x.Name)
			}
			add("unet/diffusion_pytorch_model.safetensors", dk, x)
		case strings.HasPrefix(x.Name, vaePrefix):
			add("vae/diffusion_pytorch_model.fp16.safetensors", strings.TrimPrefix(x.Name, vaePrefix), x)
		case textEncoder && strings.HasPrefix(x.Name, "cond_stage_model.transformer."):
			add("text_encoder/model.safetensors", strings.TrimPrefix(x.Name, "cond_stage_model.transformer."), x)
		}
	}
	for name, es := range parts {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		f, err := os.Create(p)
		if err != nil {
			return err
		}
		safetensors.SortEntries(es)
		if err := safetensors.Write(f, es, nil); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(dir, "model_index.json"), []byte(`{"_class_name": "StableDiffusionPipeline"}`+"\n"), 0o644)
}
