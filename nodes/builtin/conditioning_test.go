package builtin

import (
	"strconv"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/internal/testenv"
	"github.com/forgeflow/forgeflow/nodes"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

func tens(t *testing.T, v []float32, shape ...int) *gpu.Tensor {
	t.Helper()
	x, err := testRuntime(t).FromFloat32(v, shape...)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func vals(t *testing.T, x *gpu.Tensor) []float32 {
	t.Helper()
	v, err := x.Float32()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// condOf is a one-entry conditioning with an embedding of tokens×dim filled by f.
func condOf(t *testing.T, tokens, dim int, f func(i int) float32, pooled []float32) sd.Conditioning {
	v := make([]float32, tokens*dim)
	for i := range v {
		v[i] = f(i)
	}
	var p *gpu.Tensor
	if pooled != nil {
		p = tens(t, pooled, 1, len(pooled))
	}
	return sd.Conditioning{sd.NewCond(tens(t, v, 1, tokens, dim), p)}
}

// TestCLIPTextEncodeGolden: CLIPTextEncode (tokenizer + encoder + prompt weights, and
// CLIPSetLastLayer) reproduces ComfyUI's encode_from_tokens for the prompts of the
// golden CLIP case of the tiny pipeline, at each clip skip the case holds.
func TestCLIPTextEncodeGolden(t *testing.T) {
	fx := testenv.GoldenSD1(t)
	_, c := tinySD(t)
	f, err := safetensors.Open(fx.CLIP.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := func(name string) []float32 {
		tn, err := f.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		v, err := tn.Float32()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	skip2 := out0(t, "CLIPSetLastLayer", nodes.Inputs{"clip": c, "stop_at_clip_layer": int64(-2)}).(*sd.CLIP)
	if skip2.Layer != -2 || c.Layer != 0 {
		t.Fatal("CLIPSetLastLayer changed its input or did not set the layer")
	}
	checked := 0
	for p, text := range fx.CLIP.Prompts {
		for _, name := range fx.CLIP.Tensors("out." + p + ".cond") {
			suffix := strings.TrimPrefix(name, "out."+p+".cond")
			cc := c
			if suffix != "" {
				k, err := strconv.Atoi(strings.TrimPrefix(suffix, "_skip"))
				if err != nil || !strings.HasPrefix(suffix, "_skip") {
					t.Fatal(fx.CLIP.FieldError("io_tensors", "no rule for %s", name))
				}
				cc = out0(t, "CLIPSetLastLayer", nodes.Inputs{"clip": c, "stop_at_clip_layer": int64(-k)}).(*sd.CLIP)
			}
			cond := out0(t, "CLIPTextEncode", nodes.Inputs{"clip": cc, "text": text}).(sd.Conditioning)
			if len(cond) != 1 || cond[0].Strength != 1 || cond[0].EndPercent != 1 {
				t.Fatalf("%s: conditioning %+v", p, cond)
			}
			testenv.Close(t, name, vals(t, cond[0].Embedding), want(name), fx.CLIP.Tolerance)
			pooled := "out." + p + ".pooled" + suffix
			testenv.Close(t, pooled, vals(t, cond[0].Pooled), want(pooled), fx.CLIP.Tolerance)
			checked++
		}
	}
	if checked == 0 {
		t.Fatal("the golden clip case holds no prompt encoding")
	}
	if _, err := run(t, Options{}, nil, "CLIPTextEncode", nodes.Inputs{"clip": nil, "text": "x"}); err == nil {
		t.Fatal("nil clip: no error")
	}
}

// TestCLIPTextEncodeSDXLNodes: the size conditioning and aesthetic score are attached to
// every entry (the text encoding itself is CLIPTextEncode's, tested above).
func TestCLIPTextEncodeSDXLNodes(t *testing.T) {
	_, c := tinySD(t)
	cond := out0(t, "CLIPTextEncodeSDXL", nodes.Inputs{"clip": c, "width": int64(832), "height": int64(1216), "crop_w": int64(16),
		"crop_h": int64(32), "target_width": int64(1024), "target_height": int64(1000), "text_g": "a fox", "text_l": "a fox"}).(sd.Conditioning)
	s := cond[0].Size
	if s == nil || s.Width != 832 || s.Height != 1216 || s.CropW != 16 || s.CropH != 32 || s.TargetWidth != 1024 || s.TargetHeight != 1000 {
		t.Fatalf("size %+v", s)
	}
	plain := encodeNode(t, c, "a fox")
	if diffMax(vals(t, cond[0].Embedding), vals(t, plain[0].Embedding)) != 0 {
		t.Fatal("a one-encoder CLIP encodes text_l differently from CLIPTextEncode")
	}
	ref := out0(t, "CLIPTextEncodeSDXLRefiner", nodes.Inputs{"clip": c, "ascore": 2.5, "width": int64(768), "height": int64(512), "text": "a fox"}).(sd.Conditioning)
	if ref[0].AestheticScore != 2.5 || ref[0].Size.Width != 768 || ref[0].Size.Height != 512 || ref[0].Size.CropW != 0 {
		t.Fatalf("refiner entry %+v %+v", ref[0], ref[0].Size)
	}
}

func TestConditioningCombineAndZeroOut(t *testing.T) {
	a := condOf(t, 2, 3, func(i int) float32 { return float32(i + 1) }, []float32{1, 2})
	b := condOf(t, 4, 3, func(i int) float32 { return -1 }, nil)
	both := out0(t, "ConditioningCombine", nodes.Inputs{"conditioning_1": a, "conditioning_2": b}).(sd.Conditioning)
	if len(both) != 2 || both[0].Embedding != a[0].Embedding || both[1].Embedding != b[0].Embedding {
		t.Fatal("combine does not list both entries in order")
	}
	z := out0(t, "ConditioningZeroOut", nodes.Inputs{"conditioning": both}).(sd.Conditioning)
	if len(z) != 2 || z[1].Pooled != nil {
		t.Fatalf("zero out %+v", z)
	}
	for _, v := range append(vals(t, z[0].Embedding), vals(t, z[0].Pooled)...) {
		if v != 0 {
			t.Fatal("zero out left a non-zero value")
		}
	}
	if vals(t, a[0].Embedding)[0] != 1 {
		t.Fatal("zero out changed its input")
	}
	if _, err := run(t, Options{}, nil, "ConditioningCombine", nodes.Inputs{"conditioning_1": a, "conditioning_2": 3}); err == nil {
		t.Fatal("an int conditioning: no error")
	}
}

func TestConditioningAverage(t *testing.T) {
	to := condOf(t, 3, 2, func(i int) float32 { return 10 }, []float32{4, 4})
	from := condOf(t, 2, 2, func(i int) float32 { return 2 }, []float32{0, 8})
	out := out0(t, "ConditioningAverage", nodes.Inputs{"conditioning_to": to, "conditioning_from": from, "conditioning_to_strength": 0.25}).(sd.Conditioning)
	e := vals(t, out[0].Embedding)
	// Tokens 0-1: 10·0.25 + 2·0.75 = 4; token 2 has no counterpart (zero padded): 2.5.
	want := []float32{4, 4, 4, 4, 2.5, 2.5}
	if diffMax(e, want) > 1e-6 {
		t.Fatalf("average %v, want %v", e, want)
	}
	if p := vals(t, out[0].Pooled); diffMax(p, []float32{1, 7}) > 1e-6 {
		t.Fatalf("pooled %v", p)
	}
	// An entry without pooled output takes from's.
	bare := condOf(t, 1, 2, func(int) float32 { return 0 }, nil)
	out = out0(t, "ConditioningAverage", nodes.Inputs{"conditioning_to": bare, "conditioning_from": from, "conditioning_to_strength": 0.5}).(sd.Conditioning)
	if out[0].Pooled != from[0].Pooled {
		t.Fatal("pooled output not taken from conditioning_from")
	}
	// A longer from is cut to the entry's tokens.
	long := condOf(t, 5, 2, func(i int) float32 { return 1 }, nil)
	out = out0(t, "ConditioningAverage", nodes.Inputs{"conditioning_to": bare, "conditioning_from": long, "conditioning_to_strength": 0.0}).(sd.Conditioning)
	if s := out[0].Embedding.Shape(); s[1] != 1 || vals(t, out[0].Embedding)[0] != 1 {
		t.Fatalf("cut average %v", s)
	}
	wide := condOf(t, 1, 3, func(int) float32 { return 0 }, nil)
	if _, err := run(t, Options{}, nil, "ConditioningAverage", nodes.Inputs{"conditioning_to": to, "conditioning_from": wide, "conditioning_to_strength": 0.5}); err == nil {
		t.Fatal("mismatched widths: no error")
	}
	if _, err := run(t, Options{}, nil, "ConditioningAverage", nodes.Inputs{"conditioning_to": to, "conditioning_from": sd.Conditioning{}, "conditioning_to_strength": 0.5}); err == nil {
		t.Fatal("empty conditioning_from: no error")
	}
}

func TestConditioningConcat(t *testing.T) {
	to := condOf(t, 2, 2, func(i int) float32 { return float32(i) }, []float32{9})
	from := condOf(t, 1, 2, func(i int) float32 { return 7 }, nil)
	out := out0(t, "ConditioningConcat", nodes.Inputs{"conditioning_to": to, "conditioning_from": from}).(sd.Conditioning)
	if s := out[0].Embedding.Shape(); s[1] != 3 {
		t.Fatalf("shape %v", s)
	}
	if diffMax(vals(t, out[0].Embedding), []float32{0, 1, 2, 3, 7, 7}) != 0 || out[0].Pooled != to[0].Pooled {
		t.Fatal("concat values or pooled output wrong")
	}
}

func TestConditioningSetAreaAndRange(t *testing.T) {
	c := condOf(t, 1, 2, func(int) float32 { return 1 }, nil)
	a := out0(t, "ConditioningSetArea", nodes.Inputs{"conditioning": c, "width": int64(100), "height": int64(64), "x": int64(15), "y": int64(8), "strength": 0.5}).(sd.Conditioning)
	if ar := a[0].Area; ar == nil || *ar != (sd.Area{Height: 8, Width: 12, Y: 1, X: 1}) || a[0].Strength != 0.5 {
		t.Fatalf("area %+v strength %v", a[0].Area, a[0].Strength)
	}
	if c[0].Area != nil {
		t.Fatal("SetArea changed its input")
	}
	r := out0(t, "ConditioningSetTimestepRange", nodes.Inputs{"conditioning": a, "start": 0.2, "end": 0.7}).(sd.Conditioning)
	if r[0].StartPercent != 0.2 || r[0].EndPercent != 0.7 || r[0].Area == nil {
		t.Fatalf("range %+v", r[0])
	}
	if _, err := run(t, Options{}, nil, "ConditioningSetArea", nodes.Inputs{"conditioning": c, "width": int64(8), "height": int64(64), "x": int64(0), "y": int64(0), "strength": 1.0}); err == nil {
		t.Fatal("width below 64: no error")
	}
}
