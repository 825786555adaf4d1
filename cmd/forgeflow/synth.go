package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/detect"
)

// cmdSynth writes a full-size checkpoint with random weights and real key names, so
// that speed can be measured without downloading a model.
func cmdSynth(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("synth", flag.ContinueOnError)
	fs.SetOutput(stderr)
	family := fs.String("family", "sd15", "architecture: sd15, sdxl, sdxl-refiner, or sd15-tiny / sdxl-tiny (toy sizes, for tests)")
	out := fs.String("out", "", "checkpoint file to write (.safetensors)")
	dtype := fs.String("dtype", "F16", "weight dtype: F16, BF16 or F32")
	seed := fs.Uint64("seed", 1, "random seed")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: forgeflow synth --out FILE [--family sd15] [--dtype F16] [--seed N]\n\nWrites a checkpoint with the architecture's real tensor names and shapes and random weights.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if *out == "" || fs.NArg() > 0 {
		fs.Usage()
		return exitUsage
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
		fmt.Fprintf(stderr, "forgeflow synth: unknown family %q (have: sd15, sdxl, sdxl-refiner, sd15-tiny, sdxl-tiny)\n", *family)
		return exitUsage
	}
	spec := mk()
	spec.DType, spec.Seed = weights.DType(*dtype), *seed
	f, err := os.Create(*out)
	if err != nil {
		fmt.Fprintf(stderr, "forgeflow synth: %v\n", err)
		return exitFailed
	}
	bw := bufio.NewWriterSize(f, 4<<20)
	err = sd.WriteRandomCheckpoint(bw, spec)
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(*out)
		fmt.Fprintf(stderr, "forgeflow synth: %v\n", err)
		return exitFailed
	}
	fmt.Fprintf(stdout, "wrote %s: %s, %s, random weights (seed %d)\n", *out, *family, *dtype, *seed)
	return exitOK
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
