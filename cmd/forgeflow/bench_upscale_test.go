package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/upscale"
	"github.com/forgeflow/forgeflow/gpu"
)

// synth writes a full-size SPAN 4× that bench upscale loads and runs; the GFLOP count
// covers every tile (an image wider than 512 pixels runs two).
func TestSynthAndBenchUpscale(t *testing.T) {
	path := filepath.Join(t.TempDir(), "span.safetensors")
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"synth", "--family", "span-x4", "--out", path}, &out, &errb); code != exitOK {
		t.Fatalf("synth exit %d: %s", code, errb.String())
	}
	out.Reset()
	if code := run(context.Background(), []string{"bench", "upscale", "--ckpt", path, "--width", "520", "--height", "8", "--runs", "1", "--json"}, &out, &errb); code != exitOK {
		t.Fatalf("bench exit %d: %s", code, errb.String())
	}
	var r benchResult
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("bench output %q: %v", out.String(), err)
	}
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := upscale.Load(rt, path)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	want := (m.FLOPs(8, 512) + m.FLOPs(8, 40)) / 1e9 // tiles at x = 0 and 480
	if !strings.HasPrefix(r.What, "upscale SPAN 4x") || r.WeightDType != "F16" || r.MedianS <= 0 || r.GFLOP != want || r.GFLOPSPerS <= 0 {
		t.Fatalf("implausible result %+v (want %.3f GFLOP)", r, want)
	}
}
