package sd

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/gligen"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights"
)

var writeGLIGENModel = flag.String("sd.gligenmodel", "", "write the tiny GLIGEN model of the GLIGEN reference (beside the patch UNet) to this folder")

// gligenTestModel is the GLIGEN fixture's model: fusers for TinyPatchUNet's
// transformers and a position net for 768-wide text embeddings (SD1.x's heads),
// float32, seed 91.
func gligenTestModel(t testing.TB) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteRandomGLIGEN(&buf, TinyPatchUNet, 768, 91, weights.F32); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestWriteGLIGENModel(t *testing.T) {
	if *writeGLIGENModel == "" {
		t.Skip("set -sd.gligenmodel DIR to write the tiny GLIGEN model and UNet of the GLIGEN reference")
	}
	for name, data := range map[string][]byte{"gligen_tiny.safetensors": gligenTestModel(t), "patch_unet.safetensors": patchTestUNet(t)} {
		if err := os.WriteFile(filepath.Join(*writeGLIGENModel, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestGLIGENRefpeer loads the tiny GLIGEN model, grounds conditionings with text boxes
// as GLIGENTextBoxApply records them and samples the tiny UNet; the latents are
// compared with ComfyUI 0.3.64's (tools/refpeer/gligen_ref.py): one box, three boxes on
// a batch of two, a grounded area entry beside a grounded whole-image entry (the
// grounding tokens follow the area's size), and a negative with its own grounding
// (otherwise the negative borrows the positive's, as process_conds does).
func TestGLIGENRefpeer(t *testing.T) {
	model := gligenTestModel(t)
	f := refFixture(t, "gligen_refpeer.safetensors", append(patchTestUNet(t), model...))
	type box struct {
		Pooled              string `json:"pooled"`
		Height, Width, Y, X int
	}
	type entry struct {
		Cond  string `json:"cond"`
		Area  []int  `json:"area"`
		Boxes []box  `json:"boxes"`
	}
	var runs []struct {
		Name  string  `json:"name"`
		Seed  uint64  `json:"seed"`
		CFG   float64 `json:"cfg"`
		Steps int     `json:"steps"`
		Shape []int   `json:"shape"`
		Pos   []entry `json:"pos"`
		Neg   []entry `json:"neg"`
	}
	if err := json.Unmarshal([]byte(f.Metadata()["runs"]), &runs); err != nil {
		t.Fatal(err)
	}
	if len(runs) == 0 {
		t.Fatal("the fixture lists no runs")
	}
	dir := t.TempDir()
	unetPath, gligenPath := filepath.Join(dir, "unet.safetensors"), filepath.Join(dir, "gligen.safetensors")
	if err := os.WriteFile(unetPath, patchTestUNet(t), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(gligenPath, model, 0o644); err != nil {
		t.Fatal(err)
	}
	rt := ckRuntime(t)
	ck, err := LoadDiffusionModel(rt, unetPath, DiffusionModelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	gl, err := gligen.LoadFile(rt, gligenPath)
	if err != nil {
		t.Fatal(err)
	}
	defer gl.Close()
	if len(gl.Fusers) != 10 || gl.KeyDim != 768 || gl.Fusers[0].Heads != 8 {
		t.Fatalf("%d fusers, key width %d, %d heads: want TinyPatchUNet's 10 transformers, 768, 8", len(gl.Fusers), gl.KeyDim, gl.Fusers[0].Heads)
	}
	build := func(es []entry) Conditioning {
		var c Conditioning
		for _, e := range es {
			cd := NewCond(fixtureTensor(t, rt, f, e.Cond), nil)
			if len(e.Area) == 4 {
				cd.Area = &Area{Height: e.Area[0], Width: e.Area[1], Y: e.Area[2], X: e.Area[3]}
			}
			for _, b := range e.Boxes {
				v, err := fixtureTensor(t, rt, f, b.Pooled).Float32()
				if err != nil {
					t.Fatal(err)
				}
				cd = cd.AddGLIGENBox(gl.Model, gligen.Box{Pooled: v, Height: b.Height, Width: b.Width, Y: b.Y, X: b.X})
			}
			c = append(c, cd)
		}
		return c
	}
	for _, r := range runs {
		t.Run(r.Name, func(t *testing.T) {
			zeros, err := rt.Zeros(gpu.F32, r.Shape...)
			if err != nil {
				t.Fatal(err)
			}
			params := KSamplerParams{Seed: r.Seed, Steps: r.Steps, CFG: r.CFG, Sampler: "euler", Scheduler: "normal",
				Denoise: 1, StartStep: -1, LastStep: -1}
			pos, neg := build(r.Pos), build(r.Neg)
			out, err := KSample(context.Background(), ck.Model, pos, neg, &Latent{Samples: zeros}, params, nil)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := out.Samples.Float32()
			want, _ := fixtureTensor(t, rt, f, r.Name+".out").Float32()
			compareRef(t, got, want, 1e-4)
			// The grounding must matter: without the boxes the result lands elsewhere.
			for i := range pos {
				pos[i].GLIGEN = nil
			}
			for i := range neg {
				neg[i].GLIGEN = nil
			}
			plain, err := KSample(context.Background(), ck.Model, pos, neg, &Latent{Samples: zeros}, params, nil)
			if err != nil {
				t.Fatal(err)
			}
			pv, _ := plain.Samples.Float32()
			if d := maxAbsDiff(pv, want); d < 1e-2 {
				t.Errorf("the grounding changes the result by only %.3g", d)
			}
		})
	}
}

// TestGLIGENLoadErrors checks that files that are not GLIGEN models are refused with
// what is wrong.
func TestGLIGENLoadErrors(t *testing.T) {
	rt := ckRuntime(t)
	dir := t.TempDir()
	unetPath := filepath.Join(dir, "unet.safetensors")
	if err := os.WriteFile(unetPath, patchTestUNet(t), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := gligen.LoadFile(rt, unetPath); err == nil || !strings.Contains(err.Error(), "not a GLIGEN model") {
		t.Errorf("a UNet loaded as GLIGEN: %v", err)
	}
	trunc := filepath.Join(dir, "trunc.safetensors")
	m := gligenTestModel(t)
	if err := os.WriteFile(trunc, m[:len(m)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := gligen.LoadFile(rt, trunc); err == nil {
		t.Error("a truncated GLIGEN file loaded")
	}
	ok := filepath.Join(dir, "gligen.safetensors")
	if err := os.WriteFile(ok, m, 0o644); err != nil {
		t.Fatal(err)
	}
	gl, err := gligen.LoadFile(rt, ok)
	if err != nil {
		t.Fatal(err)
	}
	defer gl.Close()
	boxes := make([]gligen.Box, gligen.MaxObjects+1)
	for i := range boxes {
		boxes[i] = gligen.Box{Pooled: make([]float32, 768), Height: 1, Width: 1}
	}
	if _, err := gl.Objects(rt, boxes, 8, 8, 1); err == nil {
		t.Error("31 boxes accepted")
	}
	if _, err := gl.Objects(rt, []gligen.Box{{Pooled: make([]float32, 10), Height: 1, Width: 1}}, 8, 8, 1); err == nil {
		t.Error("a 10-wide text embedding accepted")
	}
}
