package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/forgeflow/forgeflow/diffusion/synth"
	"github.com/forgeflow/forgeflow/weights"
)

// cmdSynth writes a full-size checkpoint with random weights and real key names, so
// that speed can be measured without downloading a model.
func cmdSynth(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("synth", flag.ContinueOnError)
	fs.SetOutput(stderr)
	family := fs.String("family", "sd15", "architecture: sd15, or sd15-tiny (toy sizes, for tests)")
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
	var layout synth.Layout
	switch *family {
	case "sd15":
		layout = synth.SD15Checkpoint()
	case "sd15-tiny":
		layout = synth.SD15TinyCheckpoint()
	default:
		fmt.Fprintf(stderr, "forgeflow synth: unknown family %q (have: sd15, sd15-tiny)\n", *family)
		return exitUsage
	}
	f, err := os.Create(*out)
	if err != nil {
		fmt.Fprintf(stderr, "forgeflow synth: %v\n", err)
		return exitFailed
	}
	bw := bufio.NewWriterSize(f, 4<<20)
	err = synth.Write(bw, layout, weights.DType(*dtype), *seed)
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
	fmt.Fprintf(stdout, "wrote %s: %s, %d tensors, %s, random weights (seed %d)\n", *out, *family, len(layout), *dtype, *seed)
	return exitOK
}
