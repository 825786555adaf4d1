package controlnet

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/nn"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/diffusion/unet"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights"
)

// smallUNet is an SDXL-shaped trunk (label embedding, linear projections, a level
// without attention) small enough for unit tests.
var smallUNet = sd.RandomUNet{ModelChannels: 64, Mult: []int{1, 2}, ResBlocks: 1, Depth: []int{0, 1}, MidDepth: 1, Context: 32, Linear: true, ADM: 48}

func writeTensors(t testing.TB, dir, name string, ts []sd.RandomTensor, seed uint64) string {
	t.Helper()
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := sd.WriteRandomTensors(f, ts, seed, weights.F32); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

func randTensor(t testing.TB, rt *gpu.Runtime, seed int, shape ...int) *gpu.Tensor {
	t.Helper()
	n := 1
	for _, d := range shape {
		n *= d
	}
	x, err := rt.FromFloat32(pattern(n, seed), shape...)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// TestDiffusersKeysAgainstComfyUI renames the diffusers keys of SD1.5 and SDXL
// ControlNets (ComfyUI's unet_to_diffusers map and controlnet_* entries, from
// tools/refpeer/controlnet_keys.py) and expects ComfyUI's cldm names.
func TestDiffusersKeysAgainstComfyUI(t *testing.T) {
	f, err := os.Open("testdata/diffusers_keys.json.gz")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var ref map[string][][2]string
	if err := json.NewDecoder(zr).Decode(&ref); err != nil {
		t.Fatal(err)
	}
	for _, cfg := range []string{"sd15", "sdxl"} {
		t.Run(cfg, func(t *testing.T) {
			pairs := ref[cfg]
			if len(pairs) < 100 {
				t.Fatalf("%d pairs", len(pairs))
			}
			var keys []string
			for _, p := range pairs {
				keys = append(keys, p[0])
			}
			got, err := diffusersToLDM(keys)
			if err != nil {
				t.Fatal(err)
			}
			bad := 0
			for _, p := range pairs {
				if got[p[0]] != p[1] {
					if bad < 5 {
						t.Errorf("%s → %s, ComfyUI %s", p[0], got[p[0]], p[1])
					}
					bad++
				}
			}
			if bad > 0 {
				t.Errorf("%d of %d keys differ", bad, len(pairs))
			}
		})
	}
}

// TestDiffusersLayoutMatchesLDM loads one ControlNet from its cldm and its diffusers
// layout and expects the same residuals.
func TestDiffusersLayoutMatchesLDM(t *testing.T) {
	rt := newRuntime(t)
	dir := t.TempDir()
	ldm := writeTensors(t, dir, "cn.safetensors", RandomControlNet("", smallUNet, 3, 0), 5)
	diff := filepath.Join(dir, "cn_diffusers.safetensors")
	writeDiffusers(t, ldm, diff, smallUNet.ResBlocks)
	var outs [][]float32
	for _, p := range []string{ldm, diff} {
		n, err := Load(rt, p, LoadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close()
		outs = append(outs, residualsOf(t, rt, n.Model(), true))
	}
	if !slices.Equal(outs[0], outs[1]) {
		t.Error("the diffusers layout gives other residuals than the cldm layout")
	}
}

// residualsOf runs m on fixed inputs (8×8 latent, batch 2) and returns every residual
// concatenated.
func residualsOf(t *testing.T, rt *gpu.Runtime, m *Model, withY bool) []float32 {
	t.Helper()
	x := randTensor(t, rt, 1, 2, 4, 8, 8)
	ts, _ := rt.FromFloat32([]float32{700, 30}, 2)
	ctx := randTensor(t, rt, 2, 2, 5, 32)
	in := unet.Inputs{X: x, Timesteps: ts, Context: ctx}
	if withY {
		in.Y = randTensor(t, rt, 3, 2, 48)
	}
	hint := randTensor(t, rt, 4, 1, 3, 64, 64)
	g, err := m.guidedHint(rt, hint)
	if err != nil {
		t.Fatal(err)
	}
	g2, err := broadcastBatch(rt, g, 2, 1)
	if err != nil {
		t.Fatal(err)
	}
	res, err := m.forward(context.Background(), rt, in, g2, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer res.release()
	var all []float32
	for _, l := range [][]*gpu.Tensor{res.output, res.middle} {
		for _, r := range l {
			v, _ := r.Float32()
			all = append(all, v...)
		}
	}
	if want := len(blockChannels(smallUNet)); len(res.output) != want {
		t.Errorf("%d zero-conv outputs, want %d", len(res.output), want)
	}
	return all
}

func TestBroadcastBatch(t *testing.T) {
	rt := newRuntime(t)
	for _, tc := range []struct {
		name                string
		cur, target, batchd int
		want                []float32
	}{
		{"one item repeats", 1, 4, 2, []float32{0, 0, 0, 0}},
		{"same batch", 2, 2, 1, []float32{0, 1}},
		{"per entry", 2, 4, 2, []float32{0, 1, 0, 1}},
		{"cut", 3, 4, 2, []float32{0, 1, 0, 1}},
		{"cycle", 2, 6, 2, []float32{0, 1, 0, 0, 1, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := make([]float32, tc.cur)
			for i := range d {
				d[i] = float32(i)
			}
			x, _ := rt.FromFloat32(d, tc.cur, 1)
			y, err := broadcastBatch(rt, x, tc.target, tc.batchd)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := y.Float32()
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestPixelUnshuffleAndPool(t *testing.T) {
	rt := newRuntime(t)
	// A 1×1×4×4 ramp: block (0,0) holds 0,1,4,5 → channels 0..3 of position (0,0).
	d := make([]float32, 16)
	for i := range d {
		d[i] = float32(i)
	}
	x, _ := rt.FromFloat32(d, 1, 1, 4, 4)
	u, err := pixelUnshuffle(rt, x, 2)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := u.Float32()
	want := []float32{0, 2, 8, 10, 1, 3, 9, 11, 4, 6, 12, 14, 5, 7, 13, 15}
	if !slices.Equal(got, want) || !slices.Equal(u.Shape(), []int{1, 4, 2, 2}) {
		t.Errorf("unshuffle %v %v, want %v", u.Shape(), got, want)
	}
	// Odd 3×3: padding 1 on each side, zeros counted: output 2×2.
	o, _ := rt.FromFloat32([]float32{1, 2, 3, 4, 5, 6, 7, 8, 9}, 1, 1, 3, 3)
	p, err := avgPool2(rt, o)
	if err != nil {
		t.Fatal(err)
	}
	got, _ = p.Float32()
	want = []float32{1.0 / 4, (2 + 3) / 4.0, (4 + 7) / 4.0, (5 + 6 + 8 + 9) / 4.0}
	if !slices.Equal(got, want) {
		t.Errorf("pool %v, want %v", got, want)
	}
}

// TestRunRangeStrengthChain checks get_control's bookkeeping on one ControlNet:
// outside its percent range a control adds nothing (and passes its chain's residuals
// through), the strength scales, and a chain adds its members' residuals.
func TestRunRangeStrengthChain(t *testing.T) {
	rt := newRuntime(t)
	dir := t.TempDir()
	p := writeTensors(t, dir, "cn.safetensors", RandomControlNet("", smallUNet, 3, 0), 9)
	n, err := Load(rt, p, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ckp := writeTensors(t, dir, "unet.safetensors", sd.RandomUNetTensors("model.diffusion_model.", smallUNet), 10)
	ck, err := sd.LoadCheckpoint(rt, ckp, sd.LoadOptions{UNetHeads: unet.Heads{Dim: 64}, SkipCLIP: true, SkipVAE: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	m := ck.Model
	hint := hintNHWC(1, 64, 64, 3, 6)
	x := randTensor(t, rt, 1, 2, 4, 8, 8)
	ts, _ := rt.FromFloat32([]float32{500, 500}, 2)
	in := sd.ControlInputs{X: x, Timesteps: ts, Context: randTensor(t, rt, 2, 2, 5, 32), Y: randTensor(t, rt, 3, 2, 48), Batched: 2}
	sigmaAt := func(percent float64) float32 { return float32(m.Sampling.PercentToSigma(percent)) }
	flat := func(a *Applied, sigma float32) []float32 {
		t.Helper()
		r, err := a.Start(context.Background(), m)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		in.Sigma = sigma
		c, err := r.Residuals(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		if c == nil {
			return nil
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
	mid := sigmaAt(0.5)
	full := flat(apply(t, n, hint, 1, 0, 1, nil), mid)
	if len(full) == 0 {
		t.Fatal("no residuals in range")
	}
	if got := flat(apply(t, n, hint, 1, 0.6, 1, nil), mid); got != nil {
		t.Error("a control starting at 60% is active at 50%")
	}
	if got := flat(apply(t, n, hint, 1, 0, 0.4, nil), mid); got != nil {
		t.Error("a control ending at 40% is active at 50%")
	}
	half := flat(apply(t, n, hint, 0.5, 0, 1, nil), mid)
	for i := range full {
		if d := math.Abs(float64(half[i] - full[i]*0.5)); d > 1e-6*(1+math.Abs(float64(full[i]))) {
			t.Fatalf("strength 0.5: residual %d = %g, want %g", i, half[i], full[i]*0.5)
		}
	}
	first := apply(t, n, hint, 0.5, 0, 1, nil)
	chain := flat(apply(t, n, hint, 1, 0, 1, first), mid)
	for i := range full {
		if d := math.Abs(float64(chain[i] - (full[i] + half[i]))); d > 1e-5*(1+math.Abs(float64(full[i]))) {
			t.Fatalf("chain: residual %d = %g, want %g", i, chain[i], full[i]+half[i])
		}
	}
	// Out of range, a chained control passes its predecessor's residuals through.
	passed := flat(apply(t, n, hint, 1, 0.6, 1, first), mid)
	if !slices.Equal(passed, half) {
		t.Error("an inactive control does not pass its chain's residuals through")
	}
}

func TestLoadErrors(t *testing.T) {
	rt := newRuntime(t)
	dir := t.TempDir()
	unetFile := writeTensors(t, dir, "unet.safetensors", sd.RandomUNetTensors("model.diffusion_model.", smallUNet), 1)
	sd3 := writeTensors(t, dir, "sd3cn.safetensors", []sd.RandomTensor{{Name: "controlnet_blocks.0.weight", Shape: []int{4, 4}, Scale: 1}}, 1)
	cn := writeTensors(t, dir, "cn.safetensors", RandomControlNet("", smallUNet, 3, 0), 1)
	trunc := filepath.Join(dir, "trunc.safetensors")
	b, _ := os.ReadFile(cn)
	os.WriteFile(trunc, b[:len(b)/2], 0o644)
	missing := filepath.Join(dir, "missing.safetensors")
	var ts []sd.RandomTensor
	for _, x := range RandomControlNet("", smallUNet, 3, 0) {
		if !strings.HasPrefix(x.Name, "zero_convs.1.") {
			ts = append(ts, x)
		}
	}
	writeTensors(t, dir, "missing.safetensors", ts, 1)
	for _, tc := range []struct {
		name, path, want string
		is               error
	}{
		{"a UNet", unetFile, "does not contain ControlNet or T2I-Adapter data", ErrUnknown},
		{"SD3", sd3, "SD3, SD3.5, Flux and Qwen-Image ControlNets are not implemented", nil},
		{"truncated", trunc, "controlnet:", nil},
		{"missing zero conv", missing, "1 zero convs for 4 input blocks", nil},
		{"no file", filepath.Join(dir, "nope.safetensors"), "no such file", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := Load(rt, tc.path, LoadOptions{})
			if err == nil {
				n.Close()
				t.Fatal("loaded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q lacks %q", err, tc.want)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
		})
	}
}

func TestApplyErrors(t *testing.T) {
	rt := newRuntime(t)
	dir := t.TempDir()
	n, err := Load(rt, writeTensors(t, dir, "cn.safetensors", RandomControlNet("", smallUNet, 3, 0), 1), LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if _, err := Apply(n, Hint{N: 1, C: 3, H: 2, W: 2, Data: make([]float32, 5)}, 1, 0, 1, nil); err == nil {
		t.Error("a hint with the wrong number of values applies")
	}
	if _, err := Apply(nil, hintNHWC(1, 8, 8, 3, 1), 1, 0, 1, nil); err == nil {
		t.Error("applies without a control net")
	}
	ckp := writeTensors(t, dir, "unet.safetensors", sd.RandomUNetTensors("model.diffusion_model.", smallUNet), 10)
	ck, err := sd.LoadCheckpoint(rt, ckp, sd.LoadOptions{UNetHeads: unet.Heads{Dim: 64}, SkipCLIP: true, SkipVAE: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	// A one-channel hint for a three-channel hint encoder.
	a := apply(t, n, hintNHWC(1, 64, 64, 1, 1), 1, 0, 1, nil)
	r, err := a.Start(context.Background(), ck.Model)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	x := randTensor(t, rt, 1, 1, 4, 8, 8)
	ts, _ := rt.FromFloat32([]float32{500}, 1)
	_, err = r.Residuals(context.Background(), sd.ControlInputs{X: x, Timesteps: ts, Sigma: 1, Context: randTensor(t, rt, 2, 1, 5, 32), Y: randTensor(t, rt, 3, 1, 48), Batched: 1})
	if err == nil || !strings.Contains(err.Error(), "the hint has 1 channels, the ControlNet takes 3") {
		t.Errorf("error %v", err)
	}
	// A DiT model (SD3, Flux): no UNet to add residuals to.
	dit := &sd.Model{Runtime: rt, Sampling: ck.Model.Sampling}
	if _, err := apply(t, n, hintNHWC(1, 64, 64, 3, 1), 1, 0, 1, nil).Start(context.Background(), dit); err == nil ||
		!strings.Contains(err.Error(), "not an SD UNet model") {
		t.Errorf("a ControlNet on a model without a UNet: %v", err)
	}
	// A control-lora on a UNet built by hand, whose layers have no keys.
	lora, err := Load(rt, writeTensors(t, dir, "lora.safetensors", RandomControlLoRA(smallUNet, 3, 2), 1), LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	bare, u := *ck.Model, *ck.Model.UNet
	u.Module = nn.Module{}
	bare.UNet = &u
	if _, err := apply(t, lora, hintNHWC(1, 64, 64, 3, 1), 1, 0, 1, nil).Start(context.Background(), &bare); err == nil ||
		!strings.Contains(err.Error(), "was not loaded from a checkpoint file") {
		t.Errorf("control-lora without model weights: %v", err)
	}
}

func TestUnionTypeCheck(t *testing.T) {
	u := &Union{}
	rt := newRuntime(t)
	u.TaskEmbedding, _ = rt.Zeros(gpu.F32, 6, 320)
	if err := u.check([]int{6}); err == nil || !strings.Contains(err.Error(), "tile(6) is out of range for the number of control types(6)") {
		t.Errorf("type 6 of 6: %v", err)
	}
	if err := u.check([]int{2, 3}); err == nil {
		t.Error("two types at once accepted")
	}
	if err := u.check([]int{5}); err != nil {
		t.Error(err)
	}
}
