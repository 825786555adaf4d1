package sd

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/forgeflow/forgeflow/diffusion/clip"
	"github.com/forgeflow/forgeflow/diffusion/clipvision"
	"github.com/forgeflow/forgeflow/diffusion/sampling"
	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/diffusion/t5"
	"github.com/forgeflow/forgeflow/diffusion/unet"
	"github.com/forgeflow/forgeflow/diffusion/vae"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/detect"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// Key prefixes of a single-file checkpoint (ComfyUI's load_checkpoint_guess_config and
// the process_clip_state_dict of each supported model).
const (
	unetPrefix = "model.diffusion_model."
	vaePrefix  = "first_stage_model."
)

// LoadOptions configure checkpoint loading.
type LoadOptions struct {
	// Vocab is the CLIP BPE vocabulary the tokenizers use. When nil the CLIP loads
	// without tokenizers and Tokenize fails with VocabError (the weights are still
	// usable, e.g. by CheckpointSave).
	Vocab *clip.BPE
	// VocabErr is the reason Vocab is nil (the vocabulary search's error); it is what
	// Tokenize reports.
	VocabErr error
	// EmbeddingDirs are the textual-inversion folders for "embedding:name" in prompts.
	EmbeddingDirs []string
	// UNetHeads overrides the family's attention head layout (SD1: 8 heads; SD2/SDXL:
	// 64 channels per head). Only test-sized models need it.
	UNetHeads unet.Heads
	// CLIPHeadDim is the text transformers' channels per head; 0 means 64, what every
	// released CLIP uses. Only test-sized models need another value.
	CLIPHeadDim int
	// FP32TextEncoder keeps float32 text encoder weights as stored (ComfyUI's
	// --fp32-text-enc). By default they are rounded to float16 as ComfyUI stores text
	// encoders, so that prompt encodings match ComfyUI's for float32 checkpoints too.
	FP32TextEncoder bool
	// T5Vocab is the T5 tokenizer vocabulary of SD3 and Flux text encoders; when nil
	// their T5 loads without a tokenizer and T5VocabErr is what tokenizing reports
	// (CLIP.WithT5Vocab attaches one later).
	T5Vocab    *t5.Vocab
	T5VocabErr error
	// GGUF accepts GGUF text encoder files (ComfyUI-GGUF's CLIP loaders); other loaders
	// refuse them as ComfyUI's own do.
	GGUF bool
	// SkipModel, SkipCLIP and SkipVAE leave a part unloaded (its result nil), as
	// ComfyUI's output_model/output_clip/output_vae do.
	SkipModel, SkipCLIP, SkipVAE bool
	Logger                       *slog.Logger
}

func (o *LoadOptions) logger() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// Checkpoint is a loaded single-file checkpoint: its parts and what detection found.
// A checkpoint without VAE or text encoder tensors loads with that part nil, as in
// ComfyUI (the nodes that need it then fail with a message saying so).
// The parts' weights alias the file's memory mapping: Close only after the parts are no
// longer used.
type Checkpoint struct {
	Model    *Model
	CLIP     *CLIP
	VAE      *VAE
	Detected *detect.Model
	// Family is the diffusion model's family (detect.FamilySD1, …).
	Family detect.Family
	// CLIPVision is the CLIP vision tower an unCLIP checkpoint carries, nil otherwise
	// (unCLIPCheckpointLoader's fourth output).
	CLIPVision *clipvision.Model

	file *tensorfile.File
	// more are further files the parts read (a CLIP made of several text encoder
	// files).
	more []*tensorfile.File
}

// Close releases the file mappings.
func (c *Checkpoint) Close() error {
	err := c.file.Close()
	for _, f := range c.more {
		err = errors.Join(err, f.Close())
	}
	return err
}

// Bytes is the size of the tensors the checkpoint maps (what a memory budget counts).
func (c *Checkpoint) Bytes() int64 {
	var n int64
	for _, f := range append([]*tensorfile.File{c.file}, c.more...) {
		for _, in := range f.Tensors() {
			n += in.Size
		}
	}
	return n
}

// LoadCheckpoint loads a single-file SD1.x, SD2.x, SDXL or SDXL-refiner checkpoint
// (.safetensors, or a PyTorch .ckpt/.pt) into MODEL, CLIP and VAE as ComfyUI's
// CheckpointLoaderSimple does: the family comes from weights/detect, the text encoders
// and model sampling from the family (comfy/supported_models.py).
func LoadCheckpoint(rt *gpu.Runtime, path string, opts LoadOptions) (*Checkpoint, error) {
	f, err := openFile(path)
	if err != nil {
		return nil, err
	}
	ck, err := loadCheckpoint(rt, f, opts)
	if err != nil {
		f.Close()
		return nil, err
	}
	return ck, nil
}

func loadCheckpoint(rt *gpu.Runtime, f *tensorfile.File, opts LoadOptions) (*Checkpoint, error) {
	det, err := detectFile(f)
	if err != nil {
		return nil, err
	}
	if det.Diffusion != nil && det.Diffusion.MMDiT != nil && det.Diffusion.Prefix == unetPrefix {
		return loadSD3Checkpoint(rt, f, det, opts)
	}
	if det.Diffusion != nil && det.Diffusion.Flux != nil && det.Diffusion.Prefix == unetPrefix {
		return loadFluxCheckpoint(rt, f, det, opts)
	}
	if det.Diffusion == nil || det.Diffusion.UNet == nil {
		what := fmt.Sprintf("it holds a %s (%s), not an SD1/SD2/SDXL checkpoint", det.Kind, det.Family)
		if det.Diffusion != nil {
			what = fmt.Sprintf("%s diffusion models are not SD UNets; this loader takes SD1.x, SD2.x and SDXL checkpoints", det.Family)
		}
		return nil, &UnsupportedError{Path: f.Name(), What: what}
	}
	d := det.Diffusion
	if d.Prefix != unetPrefix {
		return nil, &UnsupportedError{Path: f.Name(), What: fmt.Sprintf("a bare diffusion model (keys under %q), not a checkpoint: load it with UNETLoader", d.Prefix)}
	}
	if d.Unsupported != "" {
		return nil, &UnsupportedError{Path: f.Name(), What: d.Unsupported}
	}
	src := statedict.NewFileSource(rt, f)
	fam := d.Family
	if fam == detect.FamilySDXL && !d.Exact && len(keysUnder(f, "conditioner.embedders.0.model.")) > 0 &&
		len(keysUnder(f, "conditioner.embedders.1.")) == 0 {
		// detect names every other-sized ADM UNet SDXL; the refiner's layout has its one
		// OpenCLIP-G where SDXL has CLIP-L.
		fam = detect.FamilySDXLRefiner
	}
	unclip := isUnCLIPCheckpoint(f, d)
	if unclip && !d.Exact {
		// detect calls another-sized ADM UNet SDXL; beside an unCLIP vision tower it is
		// SD2.1 unCLIP's layout (OpenCLIP-H text encoder, SD2's prediction rule).
		sd2 := *d
		sd2.Family, fam = detect.FamilySD2, detect.FamilySD2
		d = &sd2
	}
	ck := &Checkpoint{Detected: det, Family: fam, file: f}
	name := f.Name()
	if !opts.SkipModel {
		m, err := loadUNetModel(rt, src, src, d, fam, opts.UNetHeads)
		if err != nil {
			return nil, err
		}
		m.Weights = newWeights(f, unetPrefix)
		ck.Model = m
		if unclip {
			if ck.CLIPVision, err = loadUnCLIPParts(rt, src, m, d); err != nil {
				return nil, err
			}
		}
		if d.Variant == "zsnr" {
			// CheckpointSave writes the marker back (v_pred follows the prediction).
			ck.Model.Weights.tensors = append(ck.Model.Weights.tensors, savedTensor{name: "ztsnr", stored: "ztsnr"})
		}
	}
	if !opts.SkipVAE && len(keysUnder(f, vaePrefix)) == 0 {
		// As ComfyUI: the checkpoint loads; its VAE output is empty and a node that needs
		// it says so.
		opts.logger().Warn("checkpoint holds no VAE (no first_stage_model.* tensors)", "path", name)
	} else if !opts.SkipVAE {
		v, err := loadVAE(rt, src, vaePrefix, name)
		if err != nil {
			return nil, err
		}
		v.Latent = FamilyLatent(fam)
		ck.VAE = v
	}
	if !opts.SkipCLIP && len(clipPrefixes(f)) == 0 {
		opts.logger().Warn("checkpoint holds no text encoder weights; its CLIP output is empty", "path", name)
	} else if !opts.SkipCLIP {
		c, err := loadFamilyCLIP(rt, src, fam, opts)
		if err != nil {
			return nil, err
		}
		c.Name = name
		c.Weights = newWeights(f, clipPrefixes(f)...)
		ck.CLIP = c
	}
	opts.logger().Debug("checkpoint loaded", "path", name, "family", fam, "exact", d.Exact)
	return ck, nil
}

// loadUNetModel binds an SD UNet under d.Prefix from src (fsrc is the file it reads,
// for the SD2 prediction rule) with the family's heads, model sampling and latent
// format.
func loadUNetModel(rt *gpu.Runtime, fsrc *statedict.FileSource, src statedict.Source, d *detect.Diffusion, fam detect.Family, heads unet.Heads) (*Model, error) {
	name := fsrc.File().Name()
	pred, err := prediction(fsrc, d)
	if err != nil {
		return nil, err
	}
	if heads.Count <= 0 && heads.Dim <= 0 {
		heads = familyHeads(fam)
	}
	um, err := unet.Load(rt, src, d.Prefix, heads)
	if err != nil {
		return nil, &FormatError{Path: name, Err: err}
	}
	ms, err := familySampling(fam, pred, d.Variant == "zsnr")
	if err != nil {
		return nil, &UnsupportedError{Path: name, What: err.Error()}
	}
	return &Model{Runtime: rt, UNet: um, Sampling: ms, Latent: FamilyLatent(fam),
		ADM: d.UNet.ADMInChannels > 0, IP2P: d.Variant == "instructpix2pix", Name: name}, nil
}

// detectFile runs weights/detect on an open file.
func detectFile(f *tensorfile.File) (*detect.Model, error) {
	// In key order, as this loader has always detected (detect lists some findings,
	// text encoders among them, in the order it meets their keys).
	in := detect.FileInput(f)
	in.Tensors = slices.SortedFunc(slices.Values(in.Tensors), func(a, b weights.TensorInfo) int { return strings.Compare(a.Name, b.Name) })
	det, err := detect.Detect(in)
	if err != nil {
		if errors.Is(err, detect.ErrUnknown) {
			return nil, &FormatError{Path: f.Name(), Err: errors.New("no Stable Diffusion model in its tensors (missing model.diffusion_model.* keys?)")}
		}
		return nil, &FormatError{Path: f.Name(), Err: err}
	}
	return det, nil
}

// storedValues reads a stored tensor as float32 (detection's SD2 rule, the loader's).
func storedValues(f *tensorfile.File, key string) ([]float32, error) {
	t, err := f.Tensor(key)
	if err != nil {
		return nil, err
	}
	return t.Float32()
}

// sd2VTensor is the bias whose spread tells SD2.x v-prediction UNets from eps ones
// (comfy/supported_models.py SD20.model_type), under the UNet's prefix.
const (
	sd2VKey    = "output_blocks.11.1.transformer_blocks.0.norm1.bias"
	sd2VTensor = unetPrefix + sd2VKey
)

// prediction returns the model's prediction type. detect applies ComfyUI's SD2 rule to
// full-size models only; the rule reads values, not sizes, so it is applied here to an
// SD2-layout model of any size as well (test models, pruned variants).
func prediction(src *statedict.FileSource, d *detect.Diffusion) (detect.Prediction, error) {
	if d.Family != detect.FamilySD2 || d.Exact || d.UNet.InChannels != 4 || !src.Has(d.Prefix+sd2VKey) {
		return d.Prediction, nil
	}
	v, err := storedValues(src.File(), d.Prefix+sd2VKey)
	if err != nil {
		return "", &FormatError{Path: src.File().Name(), Err: err}
	}
	if populationStd(v) > 0.09 {
		return detect.PredictV, nil
	}
	return detect.PredictEps, nil
}

// familyHeads is the attention layout ComfyUI's supported_models gives each family:
// SD1.x 8 heads, the others 64 channels per head.
func familyHeads(f detect.Family) unet.Heads {
	if f == detect.FamilySD1 {
		return unet.Heads{Count: 8}
	}
	return unet.Heads{Dim: 64}
}

// familySampling is the family's model sampling: ComfyUI's ModelSamplingDiscrete with
// the scaled-linear β schedule (0.00085 … 0.012, 1000 steps) for every SD UNet family,
// eps or v-prediction as detected; zsnr (SDXL files carrying v_pred and ztsnr markers,
// supported_models.SDXL.model_type) rescales it to zero terminal SNR.
func familySampling(f detect.Family, p detect.Prediction, zsnr bool) (sampling.ModelSampling, error) {
	var pr sampling.Prediction
	switch p {
	case detect.PredictEps:
		pr = sampling.EPS
	case detect.PredictV:
		pr = sampling.VPrediction
	default:
		return nil, fmt.Errorf("%s models with %s prediction are not implemented", f, p)
	}
	if zsnr {
		return sampling.NewDiscreteZSNR(pr, 0.00085, 0.012, 1000)
	}
	return sampling.NewSD(pr), nil
}

// loadVAE binds the autoencoder under prefix (original or diffusers layout).
func loadVAE(rt *gpu.Runtime, src *statedict.FileSource, prefix, name string) (*VAE, error) {
	bindPrefix := prefix
	if isDiffusersVAE(src.File(), prefix) {
		bindPrefix = addDiffusersVAEAliases(src, prefix)
	} else if len(keysUnder(src.File(), prefix+"decoder.")) == 0 {
		return nil, &FormatError{Path: name, Err: fmt.Errorf("no VAE: no %sdecoder.* tensors", prefix)}
	}
	m := &vae.Model{}
	if _, err := statedict.Bind(rt, src, bindPrefix, m); err != nil {
		return nil, &FormatError{Path: name, Err: fmt.Errorf("VAE: %w", err)}
	}
	if err := m.Validate(); err != nil {
		return nil, &FormatError{Path: name, Err: err}
	}
	v := &VAE{Runtime: rt, Model: m, Latent: latentForChannels(m.LatentChannels()), Name: name}
	v.Weights = weightsUnder(src, bindPrefix, vaePrefix)
	return v, nil
}

// latentForChannels guesses a standalone VAE's latent format from its channel count;
// a checkpoint's VAE takes its family's.
func latentForChannels(c int) LatentFormat {
	if c == 16 {
		return FluxLatent
	}
	return SD15Latent
}
