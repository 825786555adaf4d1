package sd

import (
	"errors"
	"fmt"
	"strings"

	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/diffusion/t5"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights/detect"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// CLIP types of ComfyUI's CLIP loaders (comfy/sd.py CLIPType) that change how text
// encoder files are combined. Every other type ComfyUI lists needs an encoder forgeflow
// does not implement (UMT5, Llama, Gemma, Qwen, …) and is refused with an
// UnsupportedError.
const (
	CLIPTypeStableDiffusion = "stable_diffusion"
	CLIPTypeStableCascade   = "stable_cascade"
	CLIPTypeSD3             = "sd3"
	CLIPTypeHiDream         = "hidream"
	CLIPTypeSDXL            = "sdxl"
	CLIPTypeFlux            = "flux"
)

// LoadTextEncoder loads a standalone text encoder file (the text_encoders folder) as
// ComfyUI's CLIPLoader does with one file: see LoadTextEncoders.
func LoadTextEncoder(rt *gpu.Runtime, path, clipType string, opts LoadOptions) (*Checkpoint, error) {
	return LoadTextEncoders(rt, []string{path}, clipType, opts)
}

// teFile is one text encoder file: the open file, its source and what it holds.
type teFile struct {
	f    *tensorfile.File
	src  *statedict.FileSource
	te   detect.TextEncoder
	kind string // "l", "g", "h" or "t5"
}

// LoadTextEncoders loads one to three text encoder files into a CLIP as ComfyUI's
// load_text_encoder_state_dicts does for CLIPLoader, DualCLIPLoader, TripleCLIPLoader
// and ComfyUI-GGUF's loaders (opts.GGUF). Each file holds one encoder, told apart as
// detect_te_model does (a 31st layer makes a CLIP-G, a 23rd a CLIP-H, other CLIPs are
// CLIP-L; a T5 v1.1 encoder of any size counts as T5-XXL):
//
//	one file     CLIP-L: SD1's encoder (pooled output projected when the file has
//	             text_projection); CLIP-H: SD2's; CLIP-G: the SDXL refiner's; with type
//	             sd3 any of CLIP-L, CLIP-G or T5 alone as SD3's text encoder
//	two files    sdxl: CLIP-L + CLIP-G; sd3: two of CLIP-L, CLIP-G, T5; flux: CLIP-L + T5
//	three files  SD3: CLIP-L + CLIP-G + T5 (TripleCLIPLoader has no type)
//
// OpenCLIP-layout CLIP files are mapped as in checkpoints. The result holds only CLIP;
// its parts alias the files, which Checkpoint.Close releases.
func LoadTextEncoders(rt *gpu.Runtime, paths []string, clipType string, opts LoadOptions) (*Checkpoint, error) {
	if len(paths) == 0 {
		return nil, errors.New("sd: no text encoder files to load")
	}
	var files []*teFile
	ok := false
	defer func() {
		if !ok {
			for _, tf := range files {
				tf.f.Close()
			}
		}
	}()
	for _, path := range paths {
		tf, err := openTextEncoder(rt, path, opts.GGUF)
		if err != nil {
			return nil, err
		}
		files = append(files, tf)
	}
	ck, err := assembleCLIP(rt, files, clipType, opts)
	if err != nil {
		return nil, err
	}
	ok = true
	return ck, nil
}

// openTextEncoder opens a text encoder file and finds the one encoder it holds.
func openTextEncoder(rt *gpu.Runtime, path string, gguf bool) (*teFile, error) {
	var f *tensorfile.File
	var err error
	if gguf {
		f, err = openFormats(path, "")
	} else {
		f, err = openFormats(path, "GGUF text encoders (load them with the GGUF CLIP loaders)", tensorfile.Safetensors, tensorfile.Torch)
	}
	if err != nil {
		return nil, err
	}
	det, err := detectFile(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	if len(det.TextEncoders) == 0 {
		f.Close()
		return nil, &UnsupportedError{Path: f.Name(), What: fmt.Sprintf("no text encoder in it (it holds a %s, %s)", det.Kind, det.Family)}
	}
	if len(det.TextEncoders) > 1 {
		f.Close()
		return nil, &UnsupportedError{Path: f.Name(), What: fmt.Sprintf("%d text encoders in one file; load a checkpoint or one encoder per file", len(det.TextEncoders))}
	}
	te := det.TextEncoders[0]
	tf := &teFile{f: f, src: statedict.NewFileSource(rt, f), te: te}
	switch {
	case te.T5 != nil:
		tf.kind = "t5"
	case te.CLIP.Layers > 30:
		tf.kind = "g"
	case te.CLIP.Layers > 22:
		tf.kind = "h"
	default:
		tf.kind = "l"
	}
	return tf, nil
}

// assembleCLIP makes the CLIP of files for clipType (load_text_encoder_state_dicts'
// choice of clip_target).
func assembleCLIP(rt *gpu.Runtime, files []*teFile, clipType string, opts LoadOptions) (*Checkpoint, error) {
	kinds := map[string]*teFile{}
	var names []string
	for _, tf := range files {
		if prev := kinds[tf.kind]; prev != nil {
			return nil, &UnsupportedError{Path: tf.f.Name(), What: fmt.Sprintf("a second %s text encoder (the first is %s)", kindName(tf.kind), prev.f.Name())}
		}
		kinds[tf.kind] = tf
		names = append(names, kindName(tf.kind))
	}
	first := files[0]
	refuse := func(what string) (*Checkpoint, error) {
		return nil, &UnsupportedError{Path: first.f.Name(), What: what}
	}
	switch len(files) {
	case 1:
		switch {
		case clipType == CLIPTypeSD3 && first.kind != "h":
			return newSD3CLIP(rt, files, kinds, opts)
		case first.kind == "t5":
			return refuse(fmt.Sprintf("a T5 text encoder with CLIPLoader type %q: forgeflow implements T5 for SD3 (type sd3) and Flux (DualCLIPLoader type flux)", clipType))
		case clipType != CLIPTypeStableDiffusion && clipType != CLIPTypeStableCascade && clipType != CLIPTypeSD3 && clipType != CLIPTypeHiDream && clipType != "":
			return refuse(fmt.Sprintf("CLIPLoader type %q needs a text encoder forgeflow does not implement (use stable_diffusion for CLIP-L/H/G files)", clipType))
		case first.kind == "g" && (clipType == CLIPTypeStableCascade || clipType == CLIPTypeHiDream):
			return refuse(fmt.Sprintf("CLIP-G as a %s text encoder is not implemented", clipType))
		case first.kind == "l" && clipType == CLIPTypeHiDream:
			return refuse("CLIP-L as a hidream text encoder is not implemented")
		}
		return loadSingleCLIP(rt, first, opts)
	case 2:
		switch clipType {
		case CLIPTypeSD3:
			if kinds["h"] != nil {
				return refuse("a CLIP-H in an SD3 text encoder (SD3 takes CLIP-L, CLIP-G and T5)")
			}
			return newSD3CLIP(rt, files, kinds, opts)
		case CLIPTypeFlux:
			if kinds["l"] == nil || kinds["t5"] == nil {
				return refuse(fmt.Sprintf("a Flux text encoder is CLIP-L and T5-XXL, these files are %s", strings.Join(names, " and ")))
			}
			return newFluxCLIP(rt, files, kinds, opts)
		case CLIPTypeSDXL:
			if kinds["l"] == nil || kinds["g"] == nil {
				return refuse(fmt.Sprintf("an SDXL text encoder is CLIP-L and CLIP-G, these files are %s", strings.Join(names, " and ")))
			}
			return newSDXLCLIP(rt, files, kinds, opts)
		}
		return refuse(fmt.Sprintf("DualCLIPLoader type %q needs a text encoder forgeflow does not implement (sdxl, sd3 and flux are)", clipType))
	case 3:
		if kinds["l"] == nil || kinds["g"] == nil || kinds["t5"] == nil {
			return refuse(fmt.Sprintf("an SD3 text encoder is CLIP-L, CLIP-G and T5-XXL, these files are %s", strings.Join(names, ", ")))
		}
		return newSD3CLIP(rt, files, kinds, opts)
	}
	return refuse(fmt.Sprintf("%d text encoder files; at most three (SD3's) combine", len(files)))
}

func kindName(k string) string {
	if k == "t5" {
		return "T5"
	}
	return "CLIP-" + strings.ToUpper(k)
}

// loadSingleCLIP is CLIPLoader's one CLIP file: CLIP-L as SD1's encoder (pooled output
// projected), CLIP-H as SD2's, CLIP-G as the SDXL refiner's.
func loadSingleCLIP(rt *gpu.Runtime, tf *teFile, opts LoadOptions) (*Checkpoint, error) {
	var role encoderRole
	switch tf.kind {
	case "g":
		role = roleSDXLG
	case "h":
		role = roleSD2H
	default:
		// SD1ClipModel as CLIPLoader builds it keeps return_projected_pooled's default.
		role = roleSD1L
		role.projected = true
	}
	enc, err := bindFileCLIP(rt, tf, role, opts)
	if err != nil {
		return nil, err
	}
	te := tf.te
	// CheckpointSave writes the encoder under the checkpoint names of the family it
	// stands for; a transformers-layout CLIP-H/G would need converting back to
	// OpenCLIP's, which is not done.
	w := newWeights(tf.f, te.Prefix)
	switch {
	case role.name == "l" && te.Format == "hf":
		parent := strings.TrimSuffix(te.Prefix, "text_model.")
		w = newWeights(tf.f, parent).renamed(parent, "cond_stage_model.transformer.")
	case role.name == "h" && te.Format == "open_clip":
		w.renamed(te.Prefix, "cond_stage_model.model.")
	case role.name == "g" && te.Format == "open_clip":
		w.renamed(te.Prefix, "conditioner.embedders.0.model.")
	default:
		w.err = fmt.Errorf("a transformers-layout CLIP-%s file cannot be written into a checkpoint yet", strings.ToUpper(role.name))
	}
	c := &CLIP{Runtime: rt, Encoders: []*TextEncoder{enc}, Name: tf.f.Name(), Weights: w}
	return &Checkpoint{CLIP: c, Family: te.Family, file: tf.f}, nil
}

// bindFileCLIP binds the CLIP text model of a text encoder file for role: OpenCLIP's
// layout through aliases, transformers' with its projection (text_projection.weight,
// or the (in, out) text_projection old CLIPSave files hold).
func bindFileCLIP(rt *gpu.Runtime, tf *teFile, role encoderRole, opts LoadOptions) (*TextEncoder, error) {
	te, src := tf.te, tf.src
	if tf.kind == "t5" || te.CLIP == nil {
		return nil, &FormatError{Path: tf.f.Name(), Err: errors.New("not a CLIP text encoder")}
	}
	if te.Format == "open_clip" {
		return loadOpenCLIP(rt, src, te.Prefix, role, opts)
	}
	proj := strings.TrimSuffix(te.Prefix, "text_model.") + "text_projection.weight"
	if !src.Has(proj) {
		old := strings.TrimSuffix(te.Prefix, "text_model.") + "text_projection"
		if src.Has(old) {
			src.Alias(proj, statedict.Derived{Stored: old, Transpose: true})
		} else {
			proj = ""
		}
	}
	if len(keysUnder(src.File(), te.Prefix+"encoder.layers.")) == 0 {
		return nil, &FormatError{Path: tf.f.Name(), Err: fmt.Errorf("no %sencoder.layers.* tensors", te.Prefix)}
	}
	return bindTextModel(rt, src, te.Prefix, role, proj, opts)
}

// multiFile is the Checkpoint of a CLIP read from several files.
func multiFile(c *CLIP, files []*teFile) *Checkpoint {
	var names []string
	ck := &Checkpoint{CLIP: c, Family: files[0].te.Family, file: files[0].f}
	for i, tf := range files {
		names = append(names, tf.f.Name())
		if i > 0 {
			ck.more = append(ck.more, tf.f)
		}
	}
	c.Name = strings.Join(names, ", ")
	c.Weights = &Weights{err: errors.New("text encoders loaded from several files cannot be written into a checkpoint yet")}
	return ck
}

// newSDXLCLIP is DualCLIPLoader's sdxl: SDXLClipModel's CLIP-L and CLIP-G.
func newSDXLCLIP(rt *gpu.Runtime, files []*teFile, kinds map[string]*teFile, opts LoadOptions) (*Checkpoint, error) {
	l, err := bindFileCLIP(rt, kinds["l"], roleSDXLL, opts)
	if err != nil {
		return nil, err
	}
	g, err := bindFileCLIP(rt, kinds["g"], roleSDXLG, opts)
	if err != nil {
		return nil, err
	}
	return multiFile(&CLIP{Runtime: rt, Encoders: []*TextEncoder{l, g}}, files), nil
}

// newSD3CLIP is sd3_clip.SD3ClipModel over the files present: CLIP-L (hidden −2, not
// normed, pooled not projected), CLIP-G (as SDXL's) and T5 (77 tokens at least).
func newSD3CLIP(rt *gpu.Runtime, files []*teFile, kinds map[string]*teFile, opts LoadOptions) (*Checkpoint, error) {
	c := &CLIP{Runtime: rt, Kind: CLIPSD3}
	for _, k := range []string{"l", "g"} {
		tf := kinds[k]
		if tf == nil {
			continue
		}
		role := roleSDXLL
		if k == "g" {
			role = roleSDXLG
		}
		enc, err := bindFileCLIP(rt, tf, role, opts)
		if err != nil {
			return nil, err
		}
		c.Encoders = append(c.Encoders, enc)
	}
	if tf := kinds["t5"]; tf != nil {
		te, err := loadT5(rt, tf.src, tf.te.Prefix, t5.SD3MinLength, opts)
		if err != nil {
			return nil, err
		}
		c.T5 = te
	}
	return multiFile(c, files), nil
}

// newFluxCLIP is flux.FluxClipModel: CLIP-L (last layer, normed, pooled not
// projected) and T5 (256 tokens at least).
func newFluxCLIP(rt *gpu.Runtime, files []*teFile, kinds map[string]*teFile, opts LoadOptions) (*Checkpoint, error) {
	l, err := bindFileCLIP(rt, kinds["l"], roleSD1L, opts)
	if err != nil {
		return nil, err
	}
	tf := kinds["t5"]
	te, err := loadT5(rt, tf.src, tf.te.Prefix, t5.FluxMinLength, opts)
	if err != nil {
		return nil, err
	}
	return multiFile(&CLIP{Runtime: rt, Kind: CLIPFlux, Encoders: []*TextEncoder{l}, T5: te}, files), nil
}

// loadT5 binds a T5 encoder under prefix for a family padding to minLength, with the
// tokenizer opts carry. Float32 weights are rounded to float16 as ComfyUI stores a T5
// (pick_weight_dtype keeps a stored type no wider than float16: BF16, F16, fp8 and GGUF
// stay) unless opts.FP32TextEncoder.
func loadT5(rt *gpu.Runtime, src *statedict.FileSource, prefix string, minLength int, opts LoadOptions) (*T5Encoder, error) {
	var s statedict.Source = t5Source{src, rt}
	if opts.FP32TextEncoder {
		s = src
	}
	m, _, err := t5.Load(rt, s, prefix)
	if err != nil {
		return nil, &FormatError{Path: src.File().Name(), Err: err}
	}
	te := &T5Encoder{Encoder: t5.NewEncoder(m), MinLength: minLength, embDirs: opts.EmbeddingDirs, VocabErr: opts.T5VocabErr}
	if opts.T5Vocab != nil {
		te.Tokenizer, te.VocabErr = te.tokenizer(opts.T5Vocab), nil
	}
	return te, nil
}

// t5Source serves a T5's F32 tensors rounded to F16 (see loadT5).
type t5Source struct {
	statedict.Source
	rt *gpu.Runtime
}

// Tensor implements statedict.Source.
func (s t5Source) Tensor(key string) (*gpu.Tensor, error) {
	t, err := s.Source.Tensor(key)
	if err != nil || t.DType() != gpu.F32 {
		return t, err
	}
	h, err := gpu.Cast(s.rt, t, gpu.F16)
	t.Release()
	if err != nil {
		return nil, fmt.Errorf("sd: %s: %w", key, err)
	}
	return h, nil
}

// LoadVAE loads a standalone VAE file (the vae folder) or the VAE of a checkpoint, as
// VAELoader does: keys under "first_stage_model.", "vae." or none. The latent format
// is guessed from the channel count (SD15's for 4 channels); a checkpoint's VAE loaded
// this way takes its family's.
func LoadVAE(rt *gpu.Runtime, path string) (*Checkpoint, error) {
	f, err := openFile(path)
	if err != nil {
		return nil, err
	}
	ck, err := loadVAEFile(rt, f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return ck, nil
}

func loadVAEFile(rt *gpu.Runtime, f *tensorfile.File) (*Checkpoint, error) {
	det, err := detectFile(f)
	if err != nil {
		return nil, err
	}
	if det.VAE == nil {
		return nil, &UnsupportedError{Path: f.Name(), What: fmt.Sprintf("no VAE in it (it holds a %s, %s)", det.Kind, det.Family)}
	}
	if !isDiffusersVAE(f, det.VAE.Prefix) {
		if det.VAE.Unsupported != "" {
			return nil, &UnsupportedError{Path: f.Name(), What: det.VAE.Unsupported}
		}
	}
	v, err := loadVAE(rt, statedict.NewFileSource(rt, f), det.VAE.Prefix, f.Name())
	if err != nil {
		return nil, err
	}
	if det.Diffusion != nil {
		v.Latent = FamilyLatent(det.Diffusion.Family)
	}
	return &Checkpoint{VAE: v, Detected: det, Family: det.Family, file: f}, nil
}
