package sd

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/forgeflow/forgeflow/diffusion/sampling"
	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/gpu"
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
	add := func(ws *Weights, changed map[string]*gpu.Tensor) error {
		es, err := ws.entries(changed, seen)
		if err != nil {
			return fmt.Errorf("sd: save checkpoint: %w", err)
		}
		entries = append(entries, es...)
		return nil
	}
	mc, err := m.changes()
	if err != nil {
		return fmt.Errorf("sd: save checkpoint: %w", err)
	}
	if err := add(m.Weights, mc); err != nil {
		return err
	}
	if c != nil && c.Weights != nil {
		cc, err := c.changes()
		if err != nil {
			return fmt.Errorf("sd: save checkpoint: %w", err)
		}
		if err := add(c.Weights, cc); err != nil {
			return err
		}
	}
	if v != nil && v.Weights != nil {
		if err := add(v.Weights, nil); err != nil {
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

// changes lists the network parameters of m that differ from its file (LoRAs merged,
// model merges), under ComfyUI keys ("diffusion_model.…").
func (m *Model) changes() (map[string]*gpu.Tensor, error) {
	switch {
	case m.loras != nil:
		return m.loras.Changed(m.Runtime)
	case m.fluxLoras != nil:
		return m.fluxLoras.Changed(m.Runtime)
	}
	return nil, nil
}

// changes lists the text-encoder parameters of c that differ from its file, under the
// keys they were bound from (the text model's prefix in the file followed by its
// transformers-layout name; an OpenCLIP tower's under its prefix + "hf.").
func (c *CLIP) changes() (map[string]*gpu.Tensor, error) {
	out := map[string]*gpu.Tensor{}
	add := func(root interface{ Prefix() (string, bool) }, netPrefix string, ch map[string]*gpu.Tensor, err error) error {
		if err != nil {
			return err
		}
		bound, ok := root.Prefix()
		if !ok {
			return errors.New("a text model was not bound from a file")
		}
		for k, t := range ch {
			out[bound+strings.TrimPrefix(k, netPrefix)] = t
		}
		return nil
	}
	for _, te := range c.Encoders {
		if n := te.loras; n != nil {
			ch, err := n.Changed(c.Runtime)
			if err := add(n.Net, n.Prefix, ch, err); err != nil {
				return nil, err
			}
		}
		if p := te.Encoder.Projection; te.projKey != "" && p != te.loadedProjection {
			out[te.projKey] = p
		}
	}
	if c.T5 != nil && c.T5.loras != nil {
		n := c.T5.loras
		ch, err := n.Changed(c.Runtime)
		if err := add(n.Net, n.Prefix, ch, err); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// placeChanges finds the checkpoint name of each changed parameter: the tensor stored
// under its key, else the third of the fused in_proj tensor or the renamed tensor an
// OpenCLIP tower stores it as (a key with ".hf.", openCLIPPlace), else the one name that
// ends with "."+key (a UNet's "diffusion_model.…" keys). A scaled-fp8 weight written
// unscaled drops its scale_weight. A parameter with no such place is an error: it cannot
// be written in the file's layout.
func (w *Weights) placeChanges(changed map[string]*gpu.Tensor) (mem map[string]*gpu.Tensor, fused map[string][]rowsPart, drop map[string]bool, err error) {
	if len(changed) == 0 {
		return nil, nil, nil, nil
	}
	mem, fused, drop = map[string]*gpu.Tensor{}, map[string][]rowsPart{}, map[string]bool{}
	names := map[string]bool{}
	for _, st := range w.tensors {
		names[st.name] = true
	}
	keys := make([]string, 0, len(changed))
	for k := range changed {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		var found []string
		for _, st := range w.tensors {
			if st.stored == k {
				found = append(found, st.name)
			}
		}
		if len(found) == 0 && strings.Contains(k, ".hf.") {
			if name, part, ok := w.openCLIPPlace(k); ok {
				if part == -1 {
					mem[name] = changed[k]
				} else {
					fused[name] = append(fused[name], rowsPart{t: changed[k], index: part})
				}
				continue
			}
		}
		if len(found) == 0 {
			for _, st := range w.tensors {
				if strings.HasSuffix(st.name, "."+k) {
					found = append(found, st.name)
				}
			}
		}
		if len(found) != 1 {
			return nil, nil, nil, fmt.Errorf("the changed parameter %s has %d places among the %d tensors of %s; saving it in that layout is not implemented", k, len(found), len(w.tensors), w.file.Name())
		}
		t := changed[k]
		mem[found[0]] = t
		if base, ok := strings.CutSuffix(found[0], ".weight"); ok && names[base+".scale_weight"] {
			drop[base+".scale_weight"] = true
		}
	}
	return mem, fused, drop, nil
}

// rowsPart is a changed third of a fused OpenCLIP in_proj weight or bias: q (0), k (1)
// or v (2); or (−2) a whole matrix stored transposed (OpenCLIP's text_projection).
type rowsPart struct {
	t     *gpu.Tensor
	index int
}

// openCLIPPlace finds where an OpenCLIP text tower (SD2's CLIP-H, SDXL's CLIP-G) stores
// the parameter bound as key (its prefix + "hf." + the transformers-layout name),
// inverting loadOpenCLIP's renaming: the renamed tensor, or for q/k/v the third (part
// 0–2; −1 for a whole tensor) of in_proj_weight/in_proj_bias, or (part −2) the text
// projection, stored transposed.
func (w *Weights) openCLIPPlace(key string) (name string, part int, ok bool) {
	i := strings.LastIndex(key, ".hf.")
	if i < 0 {
		return "", 0, false
	}
	base, rest := key[:i+1], key[i+len(".hf."):]
	part = -1
	var stored string
	switch {
	case rest == "embeddings.token_embedding.weight":
		stored = "token_embedding.weight"
	case rest == "embeddings.position_embedding.weight":
		stored = "positional_embedding"
	case rest == "text_projection.weight":
		stored, part = "text_projection", -2
	case strings.HasPrefix(rest, "final_layer_norm."):
		stored = "ln_final." + strings.TrimPrefix(rest, "final_layer_norm.")
	default:
		layer, ok := strings.CutPrefix(rest, "encoder.layers.")
		if !ok {
			return "", 0, false
		}
		n, sub, _ := strings.Cut(layer, ".")
		from := "transformer.resblocks." + n + "."
		for i, qkv := range []string{"self_attn.q_proj.", "self_attn.k_proj.", "self_attn.v_proj."} {
			if leaf, ok := strings.CutPrefix(sub, qkv); ok {
				stored, part = from+"attn.in_proj_"+leaf, i
			}
		}
		for _, m := range [][2]string{{"layer_norm1.", "ln_1."}, {"layer_norm2.", "ln_2."},
			{"self_attn.out_proj.", "attn.out_proj."}, {"mlp.fc1.", "mlp.c_fc."}, {"mlp.fc2.", "mlp.c_proj."}} {
			if leaf, ok := strings.CutPrefix(sub, m[0]); ok {
				stored = from + m[1] + leaf
			}
		}
	}
	for _, st := range w.tensors {
		if stored != "" && st.stored == base+stored {
			return st.name, part, true
		}
	}
	return "", 0, false
}

// memEntry writes a tensor held in memory (a merged weight: F32, F16 or BF16) in the
// dtype the file stored it in when that is F32, F16 or BF16 (so that the checkpoint
// keeps its layout; a bias held in F32 goes back to F16), else in its own.
func memEntry(name string, t *gpu.Tensor, stored weights.DType) (safetensors.Entry, error) {
	dtypes := map[weights.DType]gpu.DType{weights.F32: gpu.F32, weights.F16: gpu.F16, weights.BF16: gpu.BF16}
	d, g := stored, dtypes[stored]
	if _, ok := dtypes[stored]; !ok {
		found := false
		for wd, gd := range dtypes {
			if gd == t.DType() {
				d, g, found = wd, gd, true
			}
		}
		if !found {
			return safetensors.Entry{}, fmt.Errorf("%s: a changed tensor in %s cannot be written", name, t.DType())
		}
	}
	shape := make([]int64, t.Rank())
	for i := range shape {
		shape[i] = int64(t.Dim(i))
	}
	return safetensors.Entry{Name: name, DType: d, Shape: shape, WriteData: func(w io.Writer) error {
		v, err := t.Float32()
		if err != nil {
			return err
		}
		size, err := g.StorageBytes(len(v))
		if err != nil {
			return err
		}
		buf := make([]byte, size)
		if err := gpu.EncodeFloat32(g, buf, v); err != nil {
			return err
		}
		_, err = w.Write(buf)
		return err
	}}, nil
}

// entries lists the part's tensors for a safetensors file, skipping names in seen (and
// adding the others to it): the changed parameters (ComfyUI keys, placeChanges) from
// memory, the others byte for byte from the file.
func (ws *Weights) entries(changed map[string]*gpu.Tensor, seen map[string]bool) ([]safetensors.Entry, error) {
	if ws.err != nil {
		return nil, ws.err
	}
	mem, fused, drop, err := ws.placeChanges(changed)
	if err != nil {
		return nil, err
	}
	var entries []safetensors.Entry
	for _, st := range ws.tensors {
		k := st.name
		if seen[k] || drop[k] {
			continue
		}
		seen[k] = true
		info, ok := ws.file.Info(st.stored)
		if !ok {
			return nil, fmt.Errorf("%s lacks %s", ws.file.Name(), st.stored)
		}
		if t := mem[k]; t != nil {
			e, err := memEntry(k, t, info.DType)
			if err != nil {
				return nil, err
			}
			entries = append(entries, e)
			continue
		}
		if parts := fused[k]; parts != nil {
			e, err := fusedEntry(ws.file, k, st.stored, info, parts)
			if err != nil {
				return nil, err
			}
			entries = append(entries, e)
			continue
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
	return entries, nil
}

// SaveVAE writes v as VAESave does (vae.get_sd()): a safetensors file of the VAE's
// tensors under their own names (no "first_stage_model." prefix), stored dtypes kept,
// with the metadata given.
func SaveVAE(w io.Writer, v *VAE, meta map[string]string) error {
	if v == nil || v.Weights == nil {
		return errors.New("sd: save VAE: the VAE was not loaded from a file")
	}
	vw := &Weights{file: v.Weights.file, err: v.Weights.err}
	for _, st := range v.Weights.tensors {
		st.name = strings.TrimPrefix(st.name, vaePrefix)
		vw.tensors = append(vw.tensors, st)
	}
	entries, err := vw.entries(nil, map[string]bool{})
	if err != nil {
		return fmt.Errorf("sd: save VAE: %w", err)
	}
	safetensors.SortEntries(entries)
	if err := safetensors.Write(w, entries, meta); err != nil {
		return fmt.Errorf("sd: save VAE: %w", err)
	}
	return nil
}

// fusedEntry writes a stored OpenCLIP in_proj weight or bias (q, k and v stacked along
// the rows) with the changed thirds replaced, or a transposed matrix, in its stored
// dtype.
func fusedEntry(f *tensorfile.File, name, stored string, info weights.TensorInfo, parts []rowsPart) (safetensors.Entry, error) {
	g, ok := map[weights.DType]gpu.DType{weights.F32: gpu.F32, weights.F16: gpu.F16, weights.BF16: gpu.BF16}[info.DType]
	if ok && parts[0].index == -2 {
		return transposedEntry(name, info, g, parts[0].t)
	}
	if !ok || len(info.Shape) == 0 || info.Shape[0]%3 != 0 {
		return safetensors.Entry{}, fmt.Errorf("%s: a fused %s %v cannot be rewritten", name, info.DType, info.Shape)
	}
	n := 1
	for _, d := range info.Shape {
		n *= int(d)
	}
	third := n / 3
	for _, p := range parts {
		if p.t.Numel() != third || p.index < 0 || p.index > 2 {
			return safetensors.Entry{}, fmt.Errorf("%s: a changed third of %d values, want %d", name, p.t.Numel(), third)
		}
	}
	return safetensors.Entry{Name: name, DType: info.DType, Shape: info.Shape, WriteData: func(w io.Writer) error {
		src, err := f.Tensor(stored)
		if err != nil {
			return err
		}
		rt := parts[0].t.Runtime()
		base, err := rt.FromBytes(g, src.Data, n)
		if err != nil {
			return err
		}
		v, err := base.Float32()
		base.Release()
		if err != nil {
			return err
		}
		for _, p := range parts {
			pv, err := p.t.Float32()
			if err != nil {
				return err
			}
			copy(v[p.index*third:], pv)
		}
		size, err := g.StorageBytes(n)
		if err != nil {
			return err
		}
		buf := make([]byte, size)
		if err := gpu.EncodeFloat32(g, buf, v); err != nil {
			return err
		}
		_, err = w.Write(buf)
		return err
	}}, nil
}

// transposedEntry writes t (out, in) as the stored (in, out) matrix it was loaded from.
func transposedEntry(name string, info weights.TensorInfo, g gpu.DType, t *gpu.Tensor) (safetensors.Entry, error) {
	if len(info.Shape) != 2 || t.Rank() != 2 || int64(t.Dim(0)) != info.Shape[1] || int64(t.Dim(1)) != info.Shape[0] {
		return safetensors.Entry{}, fmt.Errorf("%s: a %v tensor does not transpose to the stored %v", name, t.Shape(), info.Shape)
	}
	rows, cols := int(info.Shape[0]), int(info.Shape[1])
	return safetensors.Entry{Name: name, DType: info.DType, Shape: info.Shape, WriteData: func(w io.Writer) error {
		tv, err := t.Float32()
		if err != nil {
			return err
		}
		v := make([]float32, len(tv))
		for i := 0; i < rows; i++ {
			for j := 0; j < cols; j++ {
				v[i*cols+j] = tv[j*rows+i]
			}
		}
		size, err := g.StorageBytes(len(v))
		if err != nil {
			return err
		}
		buf := make([]byte, size)
		if err := gpu.EncodeFloat32(g, buf, v); err != nil {
			return err
		}
		_, err = w.Write(buf)
		return err
	}}, nil
}
