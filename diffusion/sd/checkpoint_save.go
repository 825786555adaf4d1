package sd

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/forgeflow/forgeflow/diffusion/sampling"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

// Weights records where a loaded part's tensors are stored: the open file and the
// checkpoint keys that belong to the part. CheckpointSave writes these tensors back
// byte for byte, so a saved checkpoint keeps ComfyUI's key names and the stored dtypes.
type Weights struct {
	file *tensorFile
	keys []string
	// from → to renames the stored key prefix to the checkpoint one (standalone VAE and
	// text encoder files); both empty for a checkpoint's own parts.
	from, to string
	// err says why this part cannot be saved into a checkpoint.
	err error
}

// renamed returns w with its keys' prefix from replaced by to when saved.
func (w *Weights) renamed(from, to string) *Weights {
	w.from, w.to = from, to
	return w
}

func newWeights(f *tensorFile, prefixes ...string) *Weights {
	w := &Weights{file: f}
	for _, p := range prefixes {
		w.keys = append(w.keys, f.keysUnder(p)...)
	}
	return w
}

// Keys lists the part's checkpoint keys.
func (w *Weights) Keys() []string { return append([]string(nil), w.keys...) }

// Architecture metadata ComfyUI writes (comfy_extras/nodes_model_merging.py
// save_checkpoint): a modelspec only for SDXL base and refiner.
func modelspecArchitecture(m *Model) string {
	if m.ADM {
		// The refiner's label embedding takes 2560 values (pooled 1280 + 5·256), the
		// base model's 2816.
		if l := m.UNet.LabelEmbed.L1.Weight; l != nil && l.Dim(1) == 2560 {
			return "stable-diffusion-xl-v1-refiner"
		}
		return "stable-diffusion-xl-v1-base"
	}
	return ""
}

// SaveCheckpoint writes model, clip and vae as one safetensors checkpoint under
// ComfyUI's single-file key names (model.diffusion_model., the family's text encoder
// prefixes, first_stage_model.), with the metadata ComfyUI's CheckpointSave adds:
// modelspec keys for SDXL, modelspec.predict_key, a "v_pred" marker tensor for
// v-prediction models, and extra (prompt, workflow) as given. title is the modelspec
// title ("name counter"). Tensors keep their stored dtype.
func SaveCheckpoint(w io.Writer, m *Model, c *CLIP, v *VAE, title string, extra map[string]string) error {
	if m == nil || m.Weights == nil {
		return errors.New("sd: save checkpoint: the model was not loaded from a checkpoint file")
	}
	var entries []safetensors.Entry
	seen := map[string]bool{}
	add := func(ws *Weights) error {
		if ws.err != nil {
			return fmt.Errorf("sd: save checkpoint: %w", ws.err)
		}
		for _, stored := range ws.keys {
			k := ws.to + strings.TrimPrefix(stored, ws.from)
			if seen[k] {
				continue
			}
			seen[k] = true
			info, ok := ws.file.infos[stored]
			if !ok {
				return fmt.Errorf("sd: save checkpoint: %s lacks %s", ws.file.name, k)
			}
			file, key := ws.file, stored
			entries = append(entries, safetensors.Entry{Name: k, DType: info.DType, Shape: info.Shape,
				WriteData: func(w io.Writer) error {
					_, data, err := file.raw(key)
					if err != nil {
						return err
					}
					_, err = w.Write(data)
					return err
				}})
		}
		return nil
	}
	if err := add(m.Weights); err != nil {
		return err
	}
	if c != nil && c.Weights != nil {
		if err := add(c.Weights); err != nil {
			return err
		}
	}
	if v != nil && v.Weights != nil {
		if err := add(v.Weights); err != nil {
			return err
		}
	}
	meta := map[string]string{}
	if arch := modelspecArchitecture(m); arch != "" {
		meta["modelspec.architecture"] = arch
		meta["modelspec.sai_model_spec"] = "1.0.0"
		meta["modelspec.implementation"] = "sgm"
		meta["modelspec.title"] = title
	}
	switch m.Sampling.Prediction() {
	case sampling.EPS:
		meta["modelspec.predict_key"] = "epsilon"
	case sampling.VPrediction:
		meta["modelspec.predict_key"] = "v"
		if !seen["v_pred"] {
			entries = append(entries, safetensors.Entry{Name: "v_pred", DType: weights.F32, Shape: []int64{0}, Data: []byte{}})
		}
	}
	for k, val := range extra {
		meta[k] = val
	}
	safetensors.SortEntries(entries)
	if err := safetensors.Write(w, entries, meta); err != nil {
		return fmt.Errorf("sd: save checkpoint: %w", err)
	}
	return nil
}

// clipPrefixes are the key prefixes of a checkpoint's text encoders that f holds.
func clipPrefixes(f *tensorFile) []string {
	var out []string
	for _, p := range []string{"cond_stage_model.", "conditioner.embedders."} {
		if len(f.keysUnder(p)) > 0 {
			out = append(out, p)
		}
	}
	return out
}
