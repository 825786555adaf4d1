package sd

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/forgeflow/forgeflow/diffusion/sampling"
	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/safetensors"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// Weights records where a loaded part's tensors are stored: the open file and, per
// tensor, its checkpoint name and stored key. CheckpointSave writes these tensors back
// byte for byte, so a saved checkpoint keeps ComfyUI's key names and the stored dtypes.
type Weights struct {
	file    *tensorfile.File
	tensors []savedTensor
	// err says why this part cannot be saved into a checkpoint.
	err error
}

// savedTensor is one tensor of a part: its name in a checkpoint, the key it is stored
// under, and its shape when saved (nil: as stored).
type savedTensor struct {
	name, stored string
	shape        []int64
}

// newWeights records every stored key under the prefixes, under its own name.
func newWeights(f *tensorfile.File, prefixes ...string) *Weights {
	w := &Weights{file: f}
	for _, p := range prefixes {
		for _, k := range keysUnder(f, p) {
			w.tensors = append(w.tensors, savedTensor{name: k, stored: k})
		}
	}
	return w
}

// renamed replaces the prefix from of every name with to.
func (w *Weights) renamed(from, to string) *Weights {
	for i := range w.tensors {
		w.tensors[i].name = to + strings.TrimPrefix(w.tensors[i].name, from)
	}
	return w
}

// weightsUnder records the tensors the source serves under prefix (stored keys and
// aliases) under the checkpoint prefix to.
func weightsUnder(src *statedict.FileSource, prefix, to string) *Weights {
	w := &Weights{file: src.File()}
	for _, k := range src.Keys() {
		rest, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		d, ok := src.Derivation(k)
		if !ok {
			continue
		}
		if d.N > 0 || d.Transpose {
			w.err = fmt.Errorf("%s is computed from %s, which is not written back", k, d.Stored)
			return w
		}
		st := savedTensor{name: to + rest, stored: d.Stored}
		for _, x := range d.Shape {
			st.shape = append(st.shape, int64(x))
		}
		w.tensors = append(w.tensors, st)
	}
	return w
}

// Names lists the part's checkpoint names.
func (w *Weights) Names() []string {
	out := make([]string, len(w.tensors))
	for i, t := range w.tensors {
		out[i] = t.name
	}
	return out
}

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
		for _, st := range ws.tensors {
			k := st.name
			if seen[k] {
				continue
			}
			seen[k] = true
			info, ok := ws.file.Info(st.stored)
			if !ok {
				return fmt.Errorf("sd: save checkpoint: %s lacks %s", ws.file.Name(), st.stored)
			}
			shape := info.Shape
			if st.shape != nil {
				shape = st.shape
			}
			file, key := ws.file, st.stored
			entries = append(entries, safetensors.Entry{Name: k, DType: info.DType, Shape: shape,
				WriteData: func(w io.Writer) error {
					t, err := file.Tensor(key)
					if err != nil {
						return err
					}
					_, err = w.Write(t.Data)
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
func clipPrefixes(f *tensorfile.File) []string {
	var out []string
	for _, p := range []string{"cond_stage_model.", "conditioner.embedders."} {
		if len(keysUnder(f, p)) > 0 {
			out = append(out, p)
		}
	}
	return out
}
