package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/internal/testenv"
	"github.com/forgeflow/forgeflow/weights/detect"
)

// synth writes a checkpoint that bench loads and runs; the result carries the fields
// the performance notes quote.
func TestSynthAndBench(t *testing.T) {
	ckpt := filepath.Join(t.TempDir(), "tiny.safetensors")
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"synth", "--family", "sd15-tiny", "--out", ckpt}, &out, &errb); code != exitOK {
		t.Fatalf("synth exit %d: %s", code, errb.String())
	}
	out.Reset()
	if code := run(context.Background(), []string{"bench", "unet", "--ckpt", ckpt, "--width", "64", "--height", "64", "--runs", "1", "--json"}, &out, &errb); code != exitOK {
		t.Fatalf("bench exit %d: %s", code, errb.String())
	}
	var r benchResult
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("bench output %q: %v", out.String(), err)
	}
	if r.MedianS <= 0 || r.GFLOP <= 0 || r.GFLOPSPerS <= 0 || r.PeakRSSBytes <= 0 || len(r.Runs) != 1 {
		t.Fatalf("implausible result %+v", r)
	}
	for _, args := range [][]string{
		{"bench", "vae", "--ckpt", ckpt, "--width", "64", "--height", "64", "--runs", "1", "--json"},
		{"bench", "vae", "--ckpt", ckpt, "--width", "64", "--height", "64", "--tile", "32", "--overlap", "8", "--runs", "1", "--json"},
		{"bench", "unet", "--ckpt", ckpt, "--width", "64", "--height", "64", "--runs", "1", "--json", "--conv", "winograd", "--pack", "off"},
		{"bench", "txt2img", "--ckpt", ckpt, "--width", "64", "--height", "64", "--steps", "2", "--runs", "1", "--json",
			"--vocab", testenv.GoldenVocabDir(t)},
	} {
		out.Reset()
		if code := run(context.Background(), args, &out, &errb); code != exitOK {
			t.Fatalf("%v: exit %d: %s", args[:2], code, errb.String())
		}
		var r benchResult
		if err := json.Unmarshal(out.Bytes(), &r); err != nil || r.MedianS <= 0 || r.PeakRSSBytes <= 0 || r.FirstS <= 0 ||
			(r.What != "txt2img" && (r.GFLOP <= 0 || r.GFLOPSPerS <= 0)) {
			t.Fatalf("%v: implausible result %q (%v)", args[:2], out.String(), err)
		}
	}
}

// synth writes a tiny SD3 all-in-one checkpoint and a tiny-sized MMDiT file that load as
// SD3.
func TestSynthSD3(t *testing.T) {
	dir := t.TempDir()
	var out, errb bytes.Buffer
	ckpt := filepath.Join(dir, "sd3.safetensors")
	if code := run(context.Background(), []string{"synth", "--family", "sd3-tiny", "--out", ckpt}, &out, &errb); code != exitOK {
		t.Fatalf("synth exit %d: %s", code, errb.String())
	}
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ck, err := sd.LoadCheckpoint(rt, ckpt, sd.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	if ck.Family != detect.FamilySD3 || ck.CLIP.T5 == nil || len(ck.CLIP.Encoders) != 2 || ck.VAE == nil {
		t.Fatalf("sd3-tiny: family %s, CLIP %+v", ck.Family, ck.CLIP)
	}
	if code := run(context.Background(), []string{"synth", "--family", "sd3-medium-mmdit", "--dtype", "Q4_0", "--out", filepath.Join(dir, "x")}, &out, &errb); code != exitFailed {
		t.Errorf("sd3 in Q4_0: exit %d, want %d", code, exitFailed)
	}
}

// synth writes tiny Flux models (safetensors, fp8-scaled safetensors and GGUF) that
// bench flux loads and runs.
func TestSynthAndBenchFlux(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ dtype, file, stored string }{{"BF16", "flux.safetensors", "BF16"}, {"Q8_0", "flux.gguf", "Q8_0"},
		{"F8_E4M3_SCALED", "flux-fp8-scaled.safetensors", "F8_E4M3"}} {
		path := filepath.Join(dir, c.file)
		var out, errb bytes.Buffer
		if code := run(context.Background(), []string{"synth", "--family", "flux-tiny", "--dtype", c.dtype, "--out", path}, &out, &errb); code != exitOK {
			t.Fatalf("synth %s: exit %d: %s", c.dtype, code, errb.String())
		}
		out.Reset()
		if code := run(context.Background(), []string{"bench", "flux", "--ckpt", path, "--width", "64", "--height", "48", "--tokens", "8", "--runs", "1", "--json"}, &out, &errb); code != exitOK {
			t.Fatalf("bench flux %s: exit %d: %s", c.dtype, code, errb.String())
		}
		var r benchResult
		if err := json.Unmarshal(out.Bytes(), &r); err != nil {
			t.Fatalf("bench output %q: %v", out.String(), err)
		}
		if r.What != "flux" || r.Batch != 1 || r.MedianS <= 0 || r.GFLOP <= 0 || r.PeakRSSBytes <= 0 || r.WeightDType != c.stored || r.ContextTokens != 8 ||
			(runtime.GOOS == "linux" && r.CPUSPerRun <= 0) {
			t.Errorf("implausible result %+v", r)
		}
	}
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"synth", "--family", "flux-dev", "--dtype", "Q3_K", "--out", filepath.Join(dir, "x.gguf")}, &out, &errb); code != exitUsage {
		t.Errorf("flux-dev as Q3_K: exit %d, want a usage error", code)
	}
	if code := run(context.Background(), []string{"synth", "--family", "flux-tiny", "--dtype", "BF16_SCALED", "--out", filepath.Join(dir, "x.safetensors")}, &out, &errb); code != exitUsage {
		t.Errorf("flux-tiny as BF16_SCALED: exit %d, want a usage error", code)
	}
}

func TestSynthAndBenchUsage(t *testing.T) {
	for _, args := range [][]string{
		{"synth"}, {"synth", "--out", "x", "--family", "nope"}, {"bench"}, {"bench", "unet"},
		{"bench", "unet", "--ckpt", "x", "--width", "65"}, {"bench", "nope", "--ckpt", "x"},
	} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), args, &out, &errb); code != exitUsage {
			t.Errorf("%v: exit %d, want usage error", args, code)
		}
	}
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"bench", "unet", "--ckpt", filepath.Join(t.TempDir(), "missing.safetensors")}, &out, &errb); code != exitFailed || !strings.Contains(errb.String(), "missing") {
		t.Errorf("missing checkpoint: exit %d, %q", code, errb.String())
	}
}
