package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/forgeflow/forgeflow/diffusion/flux"
	"github.com/forgeflow/forgeflow/diffusion/mmdit"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/detect"
	"github.com/forgeflow/forgeflow/weights/gguf"
)

// cmdSynth writes a full-size checkpoint (or Flux diffusion model or VAE) with random
// weights and real key names, so that speed can be measured without downloading a
// model.
func cmdSynth(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("synth", flag.ContinueOnError)
	fs.SetOutput(stderr)
	family := fs.String("family", "sd15", "architecture: sd15, sdxl, sdxl-refiner, sd3-medium (with CLIP-L, CLIP-G, T5-XXL), sd3-medium-mmdit, sd35-medium-mmdit, sd35-large-mmdit, flux-dev, flux-schnell, flux-vae, the upscale models esrgan-x4, realesrgan-x2, compact-x4, span-x4, or sd15-tiny / sdxl-tiny / sd3-tiny / flux-tiny (toy sizes, for tests)")
	out := fs.String("out", "", "file to write (.safetensors; .gguf for a Flux in a GGUF block type)")
	dtype := fs.String("dtype", "F16", "weight dtype: F16, BF16 or F32; Flux also F8_E4M3, F8_E5M2, F8_E4M3_SCALED, F8_E5M2_SCALED (ComfyUI's fp8-scaled layout) and the GGUF types Q8_0, Q5_1, Q5_0, Q4_1, Q4_0 (written as ComfyUI-GGUF lays Flux out)")
	seed := fs.Uint64("seed", 1, "random seed")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: forgeflow synth --out FILE [--family sd15] [--dtype F16] [--seed N]\n\nWrites a checkpoint (Flux: a diffusion-model file or the VAE) with the architecture's real tensor names and shapes and random weights.")
		fs.PrintDefaults()
	}
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if *out == "" || fs.NArg() > 0 {
		fs.Usage()
		return exitUsage
	}
	if write, ok := fluxSynth(*family, *dtype, *seed); ok {
		return writeSynth(*out, write, fmt.Sprintf("%s, %s, random weights (seed %d)", *family, *dtype, *seed), stdout, stderr)
	} else if write == nil && strings.HasPrefix(*family, "flux") {
		fmt.Fprintf(stderr, "forgeflow synth: family %s cannot be written as %s\n", *family, *dtype)
		return exitUsage
	}
	if write, ok := upscaleSynth(*family, weights.DType(*dtype), *seed); ok {
		return writeSynth(*out, write, fmt.Sprintf("%s upscale model, %s, random weights (seed %d)", *family, *dtype, *seed), stdout, stderr)
	}
	if write, ok := sd3Synth(*family, weights.DType(*dtype), *seed); ok {
		return writeSynth(*out, write, fmt.Sprintf("%s, %s, random weights (seed %d)", *family, *dtype, *seed), stdout, stderr)
	}
	specs := map[string]func() sd.RandomSpec{
		"sd15":         sd.SD15RandomSpec,
		"sdxl":         sd.SDXLRandomSpec,
		"sdxl-refiner": sd.SDXLRefinerRandomSpec,
		"sd15-tiny":    func() sd.RandomSpec { return fullVocab(sd.TinyRandomSpec(detect.FamilySD1)) },
		"sdxl-tiny":    func() sd.RandomSpec { return fullVocab(sd.TinyRandomSpec(detect.FamilySDXL)) },
	}
	mk, ok := specs[*family]
	if !ok {
		fmt.Fprintf(stderr, "forgeflow synth: unknown family %q (have: sd15, sdxl, sdxl-refiner, sd3-medium, sd3-medium-mmdit, sd35-medium-mmdit, sd35-large-mmdit, flux-dev, flux-schnell, flux-vae, esrgan-x4, realesrgan-x2, compact-x4, span-x4, sd15-tiny, sdxl-tiny, sd3-tiny, flux-tiny)\n", *family)
		return exitUsage
	}
	spec := mk()
	spec.DType, spec.Seed = weights.DType(*dtype), *seed
	return writeSynth(*out, func(w io.Writer) error { return sd.WriteRandomCheckpoint(w, spec) },
		fmt.Sprintf("%s, %s, random weights (seed %d)", *family, *dtype, *seed), stdout, stderr)
}

// writeSynth writes a file through write, removing it when that fails.
func writeSynth(path string, write func(io.Writer) error, what string, stdout, stderr io.Writer) int {
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintf(stderr, "forgeflow synth: %v\n", err)
		return exitFailed
	}
	bw := bufio.NewWriterSize(f, 4<<20)
	err = write(bw)
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		fmt.Fprintf(stderr, "forgeflow synth: %v\n", err)
		return exitFailed
	}
	fmt.Fprintf(stdout, "wrote %s: %s\n", path, what)
	return exitOK
}

// sd3Synth returns the writer of an SD3 family: an all-in-one checkpoint (sd3-medium,
// sd3-tiny with CLIP's whole vocabulary) or an MMDiT alone as a diffusion_models file;
// ok is false for other families.
func sd3Synth(family string, dtype weights.DType, seed uint64) (write func(io.Writer) error, ok bool) {
	spec := sd.SD3MediumRandomSpec()
	part := sd.SD3PartModel
	switch family {
	case "sd3-medium":
		part = ""
	case "sd3-tiny":
		spec, part = sd.TinySD3RandomSpec(false), ""
		spec.CLIPL.Vocab, spec.CLIPG.Vocab = 49408, 49408
	case "sd3-medium-mmdit":
	case "sd35-medium-mmdit":
		spec.MMDiT = mmdit.SD35MediumSpec()
	case "sd35-large-mmdit":
		spec.MMDiT = mmdit.SD35LargeSpec()
	default:
		return nil, false
	}
	spec.DType, spec.Seed = dtype, seed
	if part == "" {
		return func(w io.Writer) error { return sd.WriteRandomSD3(w, spec) }, true
	}
	return func(w io.Writer) error { return sd.WriteRandomSD3Part(w, spec, part) }, true
}

// fluxSynth returns the writer of a Flux family (the transformer as a diffusion-model
// file, safetensors or GGUF by dtype, or the Flux VAE); ok is false for other families,
// and write is nil when the dtype does not fit.
func fluxSynth(family, dtype string, seed uint64) (write func(io.Writer) error, ok bool) {
	var spec flux.RandomSpec
	switch family {
	case "flux-dev":
		spec = flux.DevRandomSpec()
	case "flux-schnell":
		spec = flux.SchnellRandomSpec()
	case "flux-tiny":
		spec = flux.TinyRandomSpec(true)
	case "flux-vae":
		return func(w io.Writer) error {
			return sd.WriteRandomVAE(w, sd.FluxRandomVAE(), "", seed, weights.DType(dtype))
		}, true
	default:
		return nil, false
	}
	spec.Seed = seed
	if base, ok := strings.CutSuffix(dtype, "_SCALED"); ok {
		for _, d := range []gpu.DType{gpu.F8E4M3FN, gpu.F8E5M2} {
			if d.String() == base {
				return func(w io.Writer) error { return flux.WriteRandomScaledFP8(w, spec, d) }, true
			}
		}
		return nil, false
	}
	for d := gpu.F32; d.IsFloat(); d++ {
		if d.String() == dtype {
			return func(w io.Writer) error { return flux.WriteRandomSafetensors(w, spec, d) }, true
		}
	}
	if q, ok := gguf.TypeByName(dtype); ok && q.CanQuantize() {
		return func(w io.Writer) error { return flux.WriteRandomGGUF(w, spec, q) }, true
	}
	return nil, false
}

// fullVocab gives a tiny spec's text encoders CLIP's whole 49,408-token vocabulary, so
// that real prompts tokenize into ids the model has.
func fullVocab(s sd.RandomSpec) sd.RandomSpec {
	if s.CLIPL.Vocab > 0 {
		s.CLIPL.Vocab = 49408
	}
	if s.OpenCLIP.Vocab > 0 {
		s.OpenCLIP.Vocab = 49408
	}
	return s
}
