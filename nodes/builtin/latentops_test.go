package builtin

import (
	"context"
	"math"
	"slices"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/nodes"
)

// refLat is the test latent of the reference script: value i of an (n, c, h, w) latent
// is ((37·i + base) mod 101 − 50)/16, exact in float32.
func refLat(t *testing.T, n, c, h, w, base int) *sd.Latent {
	return latentOf(t, func(i int) float32 { return float32((i*37+base)%101-50) / 16 }, n, c, h, w)
}

func refMask(b, h, w, base int) *Mask {
	m := &Mask{Batch: b, Height: h, Width: w, Pix: make([]float32, b*h*w)}
	for i := range m.Pix {
		m.Pix[i] = (float32((i*37+base)%101-50)/16 + 4) / 8
	}
	return m
}

// refOut is what ComfyUI 0.3.64's own node returned (latentops_ref_test.go): the samples'
// shape and values, batch_index, the noise mask's shape, or the exception it raised.
type refOut struct {
	shape, batchIndex, noiseMask []int
	data                         []float32
	err                          string
}

// TestLatentNodesMatchComfyUI runs every latent node on the inputs the reference script
// gave ComfyUI's node and compares the result value by value (float32 rounding aside:
// torch sums norms and convolutions in its own order), with batch_index and noise_mask,
// and checks that forgeflow fails where ComfyUI raised.
func TestLatentNodesMatchComfyUI(t *testing.T) {
	L := func(n, c, h, w, base int) *sd.Latent { return refLat(t, n, c, h, w, base) }
	with := func(l *sd.Latent, f func(*sd.Latent)) *sd.Latent { f(l); return l }
	sharpen := func(r int, sigma, alpha float64) any {
		return out0(t, "LatentOperationSharpen", nodes.Inputs{"sharpen_radius": int64(r), "sigma": sigma, "alpha": alpha})
	}
	tonemap := func(m float64) any {
		return out0(t, "LatentOperationTonemapReinhard", nodes.Inputs{"multiplier": m})
	}
	zeroed := L(1, 4, 2, 3, 0)
	{
		d, _ := latentValues(t, zeroed)
		for c := 0; c < 4; c++ {
			d[c*6+1] = 0
		}
		zeroed = latentOf(t, func(i int) float32 { return d[i] }, 1, 4, 2, 3)
	}
	pair := func(a, b *sd.Latent) nodes.Inputs { return nodes.Inputs{"samples1": a, "samples2": b} }
	add := func(in nodes.Inputs, k string, v any) nodes.Inputs { in[k] = v; return in }
	cases := []struct {
		name, class string
		in          nodes.Inputs
		errSub      string
	}{
		{"add/same", "LatentAdd", pair(L(1, 4, 2, 3, 0), L(1, 4, 2, 3, 5)), ""},
		{"add/reshape", "LatentAdd", pair(L(1, 4, 2, 3, 0), L(2, 4, 3, 4, 7)), ""},
		{"add/repeat", "LatentAdd", pair(L(3, 4, 2, 2, 0), L(2, 4, 2, 2, 9)), ""},
		{"add/chan1", "LatentAdd", pair(L(1, 4, 2, 2, 0), L(1, 1, 2, 2, 3)), ""},
		{"add/chanbad", "LatentAdd", pair(L(1, 4, 2, 2, 0), L(1, 3, 2, 2, 3)), "must match"},
		{"sub/same", "LatentSubtract", pair(L(1, 4, 2, 3, 0), L(1, 4, 2, 3, 5)), ""},
		{"mul", "LatentMultiply", nodes.Inputs{"samples": L(1, 4, 2, 3, 0), "multiplier": 0.37}, ""},
		{"interp/b1", "LatentInterpolate", add(pair(zeroed, L(1, 4, 2, 3, 11)), "ratio", 0.3), ""},
		{"interp/b4", "LatentInterpolate", add(pair(L(4, 4, 2, 2, 0), L(4, 4, 2, 2, 13)), "ratio", 0.6), ""},
		{"interp/b2", "LatentInterpolate", add(pair(L(2, 4, 2, 2, 0), L(2, 4, 2, 2, 13)), "ratio", 0.6), "must match"},
		{"batch/reshape", "LatentBatch", pair(with(L(1, 4, 2, 3, 0), func(l *sd.Latent) { l.BatchIndex = []int{5} }), L(2, 4, 3, 3, 3)), ""},
		{"batch/mask", "LatentBatch", pair(with(L(1, 4, 2, 2, 0), func(l *sd.Latent) { l.NoiseMask = tens(t, make([]float32, 256), 1, 1, 16, 16) }),
			with(L(1, 4, 2, 2, 3), func(l *sd.Latent) { l.BatchIndex = []int{7} })), ""},
		{"concat/x", "LatentConcat", add(pair(L(2, 4, 2, 2, 0), L(1, 4, 2, 3, 3)), "dim", "x"), ""},
		{"concat/-y", "LatentConcat", add(pair(L(1, 4, 2, 2, 0), L(1, 4, 1, 2, 3)), "dim", "-y"), ""},
		{"concat/t", "LatentConcat", add(pair(L(1, 4, 2, 2, 0), L(1, 2, 2, 2, 3)), "dim", "t"), ""},
		{"concat/bad", "LatentConcat", add(pair(L(1, 4, 2, 2, 0), L(1, 4, 3, 3, 3)), "dim", "x"), "must match"},
		{"cut/x-2", "LatentCut", nodes.Inputs{"samples": L(1, 2, 2, 4, 0), "dim": "x", "index": int64(-2), "amount": int64(5)}, ""},
		{"cut/y1", "LatentCut", nodes.Inputs{"samples": L(1, 2, 3, 2, 0), "dim": "y", "index": int64(1), "amount": int64(10)}, ""},
		{"cut/t3", "LatentCut", nodes.Inputs{"samples": L(1, 4, 2, 2, 0), "dim": "t", "index": int64(3), "amount": int64(2)}, ""},
		{"cut/x100", "LatentCut", nodes.Inputs{"samples": L(1, 2, 2, 3, 0), "dim": "x", "index": int64(100), "amount": int64(1)}, ""},
		{"cut/y-100", "LatentCut", nodes.Inputs{"samples": L(1, 2, 3, 2, 0), "dim": "y", "index": int64(-100), "amount": int64(2)}, ""},
		{"seed/fixed", "LatentBatchSeedBehavior", nodes.Inputs{"samples": with(L(2, 4, 1, 1, 0), func(l *sd.Latent) { l.BatchIndex = []int{3, 4} }), "seed_behavior": "fixed"}, ""},
		{"seed/fixed0", "LatentBatchSeedBehavior", nodes.Inputs{"samples": L(3, 4, 1, 1, 0), "seed_behavior": "fixed"}, ""},
		{"seed/random", "LatentBatchSeedBehavior", nodes.Inputs{"samples": with(L(2, 4, 1, 1, 0), func(l *sd.Latent) { l.BatchIndex = []int{3, 4} }), "seed_behavior": "random"}, ""},
		{"blend/same", "LatentBlend", add(pair(L(1, 4, 2, 3, 0), L(1, 4, 2, 3, 5)), "blend_factor", 0.3), ""},
		{"blend/resize", "LatentBlend", add(pair(L(1, 4, 2, 3, 0), L(1, 4, 4, 4, 5)), "blend_factor", 0.3), ""},
		{"cm/plain", "LatentCompositeMasked", nodes.Inputs{"destination": L(2, 4, 4, 5, 0), "source": L(1, 4, 2, 3, 7), "x": int64(16), "y": int64(8), "resize_source": false}, ""},
		{"cm/mask", "LatentCompositeMasked", nodes.Inputs{"destination": L(1, 4, 4, 5, 0), "source": L(1, 4, 2, 3, 7), "x": int64(8), "y": int64(8), "resize_source": false, "mask": refMask(1, 4, 6, 3)}, ""},
		{"cm/edge", "LatentCompositeMasked", nodes.Inputs{"destination": L(1, 4, 4, 5, 0), "source": L(1, 4, 2, 3, 7), "x": int64(32), "y": int64(24), "resize_source": false}, ""},
		{"cm/resize", "LatentCompositeMasked", nodes.Inputs{"destination": L(1, 4, 4, 5, 0), "source": L(1, 4, 2, 3, 7), "x": int64(0), "y": int64(0), "resize_source": true, "mask": refMask(2, 3, 3, 3)}, ""},
		{"crop/basic", "LatentCrop", nodes.Inputs{"samples": L(1, 2, 10, 12, 0), "width": int64(64), "height": int64(72), "x": int64(16), "y": int64(24)}, ""},
		{"crop/clamp", "LatentCrop", nodes.Inputs{"samples": L(1, 1, 10, 12, 0), "width": int64(64), "height": int64(64), "x": int64(200), "y": int64(200)}, ""},
		{"crop/small", "LatentCrop", nodes.Inputs{"samples": L(1, 1, 4, 6, 0), "width": int64(64), "height": int64(64), "x": int64(8), "y": int64(8)}, ""},
		{"flip/x", "LatentFlip", nodes.Inputs{"samples": L(1, 2, 2, 3, 0), "flip_method": "x-axis: vertically"}, ""},
		{"flip/y", "LatentFlip", nodes.Inputs{"samples": L(1, 2, 2, 3, 0), "flip_method": "y-axis: horizontally"}, ""},
		{"rot/none", "LatentRotate", nodes.Inputs{"samples": L(1, 2, 2, 3, 0), "rotation": "none"}, ""},
		{"rot/90", "LatentRotate", nodes.Inputs{"samples": L(1, 2, 2, 3, 0), "rotation": "90 degrees"}, ""},
		{"rot/180", "LatentRotate", nodes.Inputs{"samples": L(1, 2, 2, 3, 0), "rotation": "180 degrees"}, ""},
		{"rot/270", "LatentRotate", nodes.Inputs{"samples": L(1, 2, 2, 3, 0), "rotation": "270 degrees"}, ""},
		{"sharpen/r2", "LatentApplyOperation", nodes.Inputs{"samples": L(1, 4, 5, 6, 0), "operation": sharpen(2, 1.0, 0.5)}, ""},
		{"sharpen/r9", "LatentApplyOperation", nodes.Inputs{"samples": L(1, 4, 5, 6, 0), "operation": sharpen(9, 1.0, 0.1)}, "reflect padding"},
		{"tonemap/1", "LatentApplyOperation", nodes.Inputs{"samples": L(2, 4, 3, 3, 0), "operation": tonemap(1)}, ""},
		{"tonemap/0.5", "LatentApplyOperation", nodes.Inputs{"samples": L(1, 4, 2, 3, 3), "operation": tonemap(0.5)}, ""},
	}
	opts := Options{Runtime: testRuntime(t)}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want, ok := refLatentOps[tc.name]
			if !ok {
				t.Fatalf("no reference for %q", tc.name)
			}
			res, err := run(t, opts, nil, tc.class, tc.in)
			if want.err != "" {
				if err == nil {
					t.Fatalf("no error; ComfyUI raised %s", want.err)
				}
				wantErr(t, err, tc.errSub)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			l := res.Outputs[0].(*sd.Latent)
			got, shape := latentValues(t, l)
			if !slices.Equal(shape, want.shape) {
				t.Fatalf("shape %v, ComfyUI %v", shape, want.shape)
			}
			for i := range got {
				if d := math.Abs(float64(got[i] - want.data[i])); d > 2e-6+2e-6*math.Abs(float64(want.data[i])) || math.IsNaN(float64(got[i])) {
					t.Fatalf("value %d: %v, ComfyUI %v", i, got[i], want.data[i])
				}
			}
			if !slices.Equal(l.BatchIndex, want.batchIndex) {
				t.Errorf("batch_index %v, ComfyUI %v", l.BatchIndex, want.batchIndex)
			}
			var mask []int
			if l.NoiseMask != nil {
				mask = l.NoiseMask.Shape()
			}
			if !slices.Equal(mask, want.noiseMask) {
				t.Errorf("noise_mask %v, ComfyUI %v", mask, want.noiseMask)
			}
		})
	}
}

// TestLatentNodesKeepTheirInput checks that no latent node writes into its input (the
// executor shares cached outputs).
func TestLatentNodesKeepTheirInput(t *testing.T) {
	a, b := refLat(t, 1, 4, 3, 3, 0), refLat(t, 1, 4, 3, 3, 9)
	before, _ := latentValues(t, a)
	before = slices.Clone(before)
	for _, class := range []string{"LatentAdd", "LatentSubtract", "LatentBatch"} {
		mustRun(t, class, nodes.Inputs{"samples1": a, "samples2": b})
	}
	mustRun(t, "LatentInterpolate", nodes.Inputs{"samples1": a, "samples2": b, "ratio": 0.5})
	mustRun(t, "LatentBlend", nodes.Inputs{"samples1": a, "samples2": b, "blend_factor": 0.5})
	mustRun(t, "LatentCompositeMasked", nodes.Inputs{"destination": a, "source": b, "x": int64(8), "y": int64(0), "resize_source": false})
	mustRun(t, "LatentApplyOperation", nodes.Inputs{"samples": a, "operation": latentSharpen{radius: 1, sigma: 1, alpha: 1}})
	after, _ := latentValues(t, a)
	if !slices.Equal(before, after) {
		t.Fatal("a latent node changed its input")
	}
}

// TestLatentApplyOperationCFG checks that the node adds the operation as a pre-CFG
// function of a copy of the model (the sampling side is tested in diffusion/sd).
func TestLatentApplyOperationCFG(t *testing.T) {
	m := &sd.Model{}
	op := latentSharpen{radius: 1, sigma: 1, alpha: 1}
	n := &LatentApplyOperationCFG{Model: m, Operation: op}
	res, err := n.Run(context.Background(), &nodes.Env{})
	if err != nil {
		t.Fatal(err)
	}
	got := res.Outputs[0].(*sd.Model)
	if got == m || len(m.PreCFG) != 0 || len(got.PreCFG) != 1 || got.PreCFG[0] != (sd.LatentOperationCFG{Op: op}) || got.DisableCFG1 {
		t.Fatalf("patched model %+v", got.Patches)
	}
}

// TestLatentApplyOperationCFGRefpeer samples the patch UNet through KSampler with a model
// patched by LatentApplyOperationCFG, as ComfyUI did for refLatentOpCFG: the operation
// reaches every step's guidance, with an uncond (cfg 5) and without (cfg 1).
func TestLatentApplyOperationCFGRefpeer(t *testing.T) {
	if testing.Short() {
		t.Skip("samples a UNet")
	}
	e := newVisionEnv(t)
	f := sdFixture(t, "patches_refpeer.safetensors")
	cond := func(name string) sd.Conditioning {
		return sd.Conditioning{sd.NewCond(refTensor(t, e.rt, f, name), nil)}
	}
	base := e.run(t, "UNETLoader", nodes.Inputs{"unet_name": "patch_unet.safetensors", "weight_dtype": "default"})[0]
	ops := map[string]any{
		"sharpen":      e.run(t, "LatentOperationSharpen", nodes.Inputs{"sharpen_radius": int64(2), "sigma": 1.0, "alpha": 0.5})[0],
		"tonemap_cfg1": e.run(t, "LatentOperationTonemapReinhard", nodes.Inputs{"multiplier": 0.8})[0],
	}
	for name, ref := range refLatentOpCFG {
		t.Run(name, func(t *testing.T) {
			model := e.run(t, "LatentApplyOperationCFG", nodes.Inputs{"model": base, "operation": ops[name]})[0]
			zeros, _ := e.rt.Zeros(gpu.F32, 1, 4, 16, 12)
			out := e.run(t, "KSampler", nodes.Inputs{"model": model, "seed": ref.seed, "steps": int64(4), "cfg": ref.cfg,
				"sampler_name": "euler", "scheduler": "normal", "positive": cond("pos"), "negative": cond("neg"),
				"latent_image": &sd.Latent{Samples: zeros}, "denoise": 1.0})[0].(*sd.Latent)
			closeTo(t, "latent", data(t, out.Samples), ref.out, 1e-4)
		})
	}
}

// TestLatentNodeErrors covers mismatches ComfyUI fails on inside torch (torch.cat, a
// broadcast) that the reference table does not: each is an error naming the shapes.
func TestLatentNodeErrors(t *testing.T) {
	opts := Options{Runtime: testRuntime(t)}
	four, three := refLat(t, 1, 4, 2, 2, 0), refLat(t, 1, 3, 2, 2, 0)
	for _, tc := range []struct {
		class string
		in    nodes.Inputs
		sub   string
	}{
		{"LatentBatch", nodes.Inputs{"samples1": four, "samples2": three}, "channels"},
		{"LatentBlend", nodes.Inputs{"samples1": four, "samples2": three, "blend_factor": 0.5}, "must match"},
		{"LatentSubtract", nodes.Inputs{"samples1": four, "samples2": three}, "must match"},
		{"LatentCompositeMasked", nodes.Inputs{"destination": four, "source": three, "x": int64(0), "y": int64(0), "resize_source": false}, "channels"},
		{"LatentConcat", nodes.Inputs{"samples1": four, "samples2": three, "dim": "x"}, "must match"},
	} {
		t.Run(tc.class, func(t *testing.T) {
			_, err := run(t, opts, nil, tc.class, tc.in)
			wantErr(t, err, tc.sub)
		})
	}
}
