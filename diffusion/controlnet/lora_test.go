package controlnet

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/lora"
	"github.com/forgeflow/forgeflow/diffusion/lora/loratest"
	"github.com/forgeflow/forgeflow/diffusion/nn"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/diffusion/unet"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/internal/dtype"
	"github.com/forgeflow/forgeflow/weights/gguf"
)

// TestControlNetsOnLoRAModel checks that a control built on a model's UNet weights
// takes the LoRA-patched ones when the model carries a LoRA, as ComfyUI's
// ControlLora.pre_run and diff ControlNet loader read them after patching the model:
// the same residuals whether the LoRA is merged or added at run time, and not the
// plain model's.
func TestControlNetsOnLoRAModel(t *testing.T) {
	rt := newRuntime(t)
	dir := t.TempDir()
	ckp := writeTensors(t, dir, "unet.safetensors", sd.RandomUNetTensors("model.diffusion_model.", smallUNet), 10)
	ck, err := sd.LoadCheckpoint(rt, ckp, sd.LoadOptions{UNetHeads: unet.Heads{Dim: 64}, SkipCLIP: true, SkipVAE: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	m := ck.Model

	// A kohya LoRA on every conv and linear of the input and middle blocks.
	params, _, err := sd.LoRAParams(m, nil)
	if err != nil {
		t.Fatal(err)
	}
	lf := loratest.New(3)
	patched := 0
	for _, p := range params {
		layer, ok := strings.CutSuffix(strings.TrimPrefix(p.Key, lora.UNetPrefix), ".weight")
		if !ok || len(p.Shape) < 2 || !(strings.HasPrefix(layer, "input_blocks.") || strings.HasPrefix(layer, "middle_block.")) {
			continue
		}
		lf.LoRA("lora_unet_"+strings.ReplaceAll(layer, ".", "_"), loratest.Kohya, p.Shape[0], 2, 1, p.Shape[1:]...)
		patched++
	}
	if patched < 10 {
		t.Fatalf("only %d layers to patch", patched)
	}
	b, err := lf.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	lp := filepath.Join(dir, "style.safetensors")
	if err := os.WriteFile(lp, b, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := lora.Open(rt, lp)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	withLoRA := func(mode lora.Mode) *sd.Model {
		t.Helper()
		lm, _, err := sd.LoadLoRA(m, nil, f, 0.7, 0, sd.LoRAOptions{Mode: mode})
		if err != nil {
			t.Fatal(err)
		}
		return lm
	}
	merged, runtime := withLoRA(lora.Merge), withLoRA(lora.Runtime)

	x := randTensor(t, rt, 1, 2, 4, 8, 8)
	ts, _ := rt.FromFloat32([]float32{500, 500}, 2)
	in := sd.ControlInputs{X: x, Timesteps: ts, Sigma: 1, Context: randTensor(t, rt, 2, 2, 5, 32), Y: randTensor(t, rt, 3, 2, 48), Batched: 2}
	hint := hintNHWC(1, 64, 64, 3, 4)
	residuals := func(n *Net, on *sd.Model) []float32 {
		t.Helper()
		r, err := apply(t, n, hint, 1, 0, 1, nil).Start(context.Background(), on)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		c, err := r.Residuals(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		var all []float32
		for _, l := range [][]*gpu.Tensor{c.Input, c.Output, {c.Middle}} {
			for _, x := range l {
				if x != nil {
					v, _ := x.Float32()
					all = append(all, v...)
					x.Release()
				}
			}
		}
		return all
	}
	dist := func(a, b []float32) float64 {
		if len(a) != len(b) {
			t.Fatalf("%d and %d residual values", len(a), len(b))
		}
		var d float64
		for i := range a {
			d += math.Abs(float64(a[i] - b[i]))
		}
		return d
	}

	cl, err := Load(rt, writeTensors(t, dir, "control_lora.safetensors", RandomControlLoRA(smallUNet, 3, 2), 11), LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	plain, onMerged, onRuntime := residuals(cl, m), residuals(cl, merged), residuals(cl, runtime)
	moved := dist(plain, onMerged)
	if moved == 0 {
		t.Fatal("the LoRA does not change the control-lora's residuals")
	}
	if d := dist(onMerged, onRuntime); d > 1e-4*moved {
		t.Errorf("control-lora on the merged and on the run-time LoRA differ by %.3g (the LoRA moves it by %.3g)", d, moved)
	}

	diffPath := writeTensors(t, dir, "diff.safetensors", RandomDiffControlNet(smallUNet, 3), 12)
	diff := func(on *sd.Model) []float32 {
		n, err := Load(rt, diffPath, LoadOptions{Model: on})
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close()
		return residuals(n, m)
	}
	plain, onMerged, onRuntime = diff(m), diff(merged), diff(runtime)
	if moved = dist(plain, onMerged); moved == 0 {
		t.Fatal("the LoRA does not change the diff ControlNet's residuals")
	}
	if d := dist(onMerged, onRuntime); d > 1e-4*moved {
		t.Errorf("diff ControlNet loaded with the merged and with the run-time LoRA differ by %.3g (the LoRA moves it by %.3g)", d, moved)
	}
}

// TestControlLoRAOnQuantizedModel builds a control-lora on a UNet whose attention
// projection holds Q8_0 blocks, as a GGUF UNet's does: the trunk takes the dequantized
// weight plus the file's up·down, the same residuals as on a model holding those
// dequantized values in float32.
func TestControlLoRAOnQuantizedModel(t *testing.T) {
	rt := newRuntime(t)
	dir := t.TempDir()
	ckp := writeTensors(t, dir, "unet.safetensors", sd.RandomUNetTensors("model.diffusion_model.", smallUNet), 10)
	ck, err := sd.LoadCheckpoint(rt, ckp, sd.LoadOptions{UNetHeads: unet.Heads{Dim: 64}, SkipCLIP: true, SkipVAE: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	withQ := func(quantized bool) *sd.Model {
		t.Helper()
		u, err := nn.Clone(ck.Model.UNet)
		if err != nil {
			t.Fatal(err)
		}
		var lin *nn.Linear
		for _, block := range u.Input {
			for _, mod := range block {
				if mod.Transformer != nil && lin == nil {
					lin = &mod.Transformer.Blocks[0].Attn1.Q
				}
			}
		}
		if lin == nil {
			t.Fatal("no attention in the trunk")
		}
		w, err := lin.Weight.Float32()
		if err != nil {
			t.Fatal(err)
		}
		n, k := lin.Weight.Dim(0), lin.Weight.Dim(1)
		data := make([]byte, len(w)/gguf.TypeQ8_0.BlockSize()*gguf.TypeQ8_0.TypeSize())
		if err := gguf.Quantize(data, gguf.TypeQ8_0, w); err != nil {
			t.Fatal(err)
		}
		if quantized {
			lin.Weight, err = rt.FromBytes(gpu.Q8_0, data, n, k)
		} else {
			deq := make([]float32, len(w))
			dtype.DecodeQ8_0(deq, data)
			lin.Weight, err = rt.FromFloat32(deq, n, k)
		}
		if err != nil {
			t.Fatal(err)
		}
		m := *ck.Model
		m.UNet = u
		return &m
	}
	cl, err := Load(rt, writeTensors(t, dir, "control_lora.safetensors", RandomControlLoRA(smallUNet, 3, 2), 11), LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	x := randTensor(t, rt, 1, 1, 4, 8, 8)
	ts, _ := rt.FromFloat32([]float32{500}, 1)
	in := sd.ControlInputs{X: x, Timesteps: ts, Sigma: 1, Context: randTensor(t, rt, 2, 1, 5, 32), Y: randTensor(t, rt, 3, 1, 48), Batched: 1}
	residuals := func(on *sd.Model) []float32 {
		t.Helper()
		r, err := apply(t, cl, hintNHWC(1, 64, 64, 3, 4), 1, 0, 1, nil).Start(context.Background(), on)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		c, err := r.Residuals(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		var all []float32
		for _, x := range append(c.Input, c.Middle) {
			if x != nil {
				v, _ := x.Float32()
				all = append(all, v...)
				x.Release()
			}
		}
		return all
	}
	q, f := residuals(withQ(true)), residuals(withQ(false))
	var d, n float64
	for i := range f {
		d = max(d, math.Abs(float64(q[i]-f[i])))
		n = max(n, math.Abs(float64(f[i])))
	}
	if d > 1e-6*(1+n) {
		t.Errorf("control-lora on the Q8_0 model differs from the dequantized one by %.3g (max %.3g)", d, n)
	}
}
