package builtin

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/lora"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/nodes"
)

// TestModelPatchNodesRefpeer runs UNetSelfAttentionMultiply, UNetCrossAttentionMultiply
// PatchModelAddDownscale and HyperTile through their widgets on the tiny patch UNet and samples
// with KSampler; the expected latents are ComfyUI 0.3.64's own, made by
// tools/refpeer/modelpatch_ref.py (its docstring has the commands) with ComfyUI's nodes
// on the same model file, conditionings and seeds.
func TestModelPatchNodesRefpeer(t *testing.T) {
	e := newVisionEnv(t)
	f := sdFixture(t, "modelpatch_refpeer.safetensors")
	var runs []patchRun
	fixtureRuns(t, f, &runs)
	if len(runs) < 10 {
		t.Fatalf("the fixture lists %d runs", len(runs))
	}
	pos := sd.Conditioning{sd.NewCond(refTensor(t, e.rt, f, "pos"), nil)}
	neg := sd.Conditioning{sd.NewCond(refTensor(t, e.rt, f, "neg"), nil)}
	base := e.run(t, "UNETLoader", nodes.Inputs{"unet_name": "patch_unet.safetensors", "weight_dtype": "default"})[0]
	sample := func(t *testing.T, model any, seed uint64, steps int, cfg float64, sampler, scheduler string, shape []int) []float32 {
		zeros, _ := e.rt.Zeros(gpu.F32, shape...)
		out := e.run(t, "KSampler", nodes.Inputs{"model": model, "seed": seed, "steps": steps, "cfg": cfg,
			"sampler_name": sampler, "scheduler": scheduler, "positive": pos, "negative": neg,
			"latent_image": &sd.Latent{Samples: zeros}, "denoise": 1.0})[0].(*sd.Latent)
		return data(t, out.Samples)
	}
	for _, r := range runs {
		t.Run(r.Name, func(t *testing.T) {
			model := base
			for _, p := range r.Patches {
				num := func(i int) float64 { return p[i].(float64) }
				var class string
				in := nodes.Inputs{"model": model}
				switch p[0] {
				case "self", "cross":
					class = map[any]string{"self": "UNetSelfAttentionMultiply", "cross": "UNetCrossAttentionMultiply"}[p[0]]
					in["q"], in["k"], in["v"], in["out"] = num(1), num(2), num(3), num(4)
				case "shrink":
					class = "PatchModelAddDownscale"
					in["block_number"], in["downscale_factor"], in["start_percent"], in["end_percent"] = int(num(1)), num(2), num(3), num(4)
					in["downscale_after_skip"], in["downscale_method"], in["upscale_method"] = p[5], p[6], p[7]
				case "hypertile":
					class = "HyperTile"
					in["tile_size"], in["swap_size"], in["max_depth"], in["scale_depth"] = int(num(1)), int(num(2)), int(num(3)), p[4]
				default:
					t.Fatalf("unknown patch %v", p)
				}
				model = e.run(t, class, in)[0]
			}
			got := sample(t, model, r.Seed, r.Steps, r.CFG, r.Sampler, r.Scheduler, r.Shape)
			want := data(t, refTensor(t, e.rt, f, r.Name+".out"))
			closeTo(t, "latent", got, want, 1e-4)
			// The patches must matter: the unpatched model lands elsewhere.
			plain := sample(t, base, r.Seed, r.Steps, r.CFG, r.Sampler, r.Scheduler, r.Shape)
			if d := maxDiff(plain, want); d < 1e-2 {
				t.Errorf("the patches change the result by only %.3g", d)
			}
		})
	}
}

// TestAttentionMultiplyWeights checks what the attention multipliers do to the weights:
// exactly the parameters ComfyUI's suffix match names (weights and biases of
// attn1/attn2 to_q, to_k, to_v, to_out.0; CLIP's self_attn q/k/v/out_proj) become
// float32(w·f) in the stored dtype, every other tensor stays the loaded one (shared, not
// copied), factors of 1 leave the model as it is, and the input model is unchanged.
func TestAttentionMultiplyWeights(t *testing.T) {
	e := newVisionEnv(t)
	base := e.run(t, "UNETLoader", nodes.Inputs{"unet_name": "patch_unet.safetensors", "weight_dtype": "default"})[0].(*sd.Model)
	params, _, err := sd.LoRAParams(base, nil)
	if err != nil {
		t.Fatal(err)
	}
	baseT := map[string]*gpu.Tensor{}
	for _, p := range params {
		baseT[p.Key] = unetParam(t, base, p.Key)
	}
	cases := []struct {
		class, attn  string
		q, k, v, out float64
	}{
		{"UNetSelfAttentionMultiply", "attn1", 2, 1, 0.5, 0},
		{"UNetCrossAttentionMultiply", "attn2", 1.25, 0.75, 1, 3},
	}
	for _, tc := range cases {
		t.Run(tc.class, func(t *testing.T) {
			m := e.run(t, tc.class, nodes.Inputs{"model": base, "q": tc.q, "k": tc.k, "v": tc.v, "out": tc.out})[0].(*sd.Model)
			factors := map[string]float64{".to_q.": tc.q, ".to_k.": tc.k, ".to_v.": tc.v, ".to_out.0.": tc.out}
			scaled := 0
			for _, p := range params {
				want := 1.0
				for suffix, f := range factors {
					if strings.Contains(p.Key, tc.attn+suffix) && (strings.HasSuffix(p.Key, ".weight") || strings.HasSuffix(p.Key, ".bias")) {
						want = f
					}
				}
				got := unetParam(t, m, p.Key)
				if want == 1 {
					if got != baseT[p.Key] {
						t.Errorf("%s: a copy of a weight the node does not scale", p.Key)
					}
					continue
				}
				scaled++
				if got.DType() != baseT[p.Key].DType() {
					t.Errorf("%s: dtype %v, stored %v", p.Key, got.DType(), baseT[p.Key].DType())
				}
				g, w := data(t, got), data(t, baseT[p.Key])
				for i := range g {
					if g[i] != w[i]*float32(want) {
						t.Fatalf("%s[%d] = %v, want %v·%v", p.Key, i, g[i], w[i], want)
					}
				}
			}
			if scaled == 0 {
				t.Fatal("no weight scaled")
			}
			if unetParam(t, base, params[0].Key) != baseT[params[0].Key] || base.LoRANetwork() != nil {
				t.Error("the input model changed")
			}
		})
	}
	same := e.run(t, "UNetSelfAttentionMultiply", nodes.Inputs{"model": base, "q": 1.0, "k": 1.0, "v": 1.0, "out": 1.0})[0]
	if same != base {
		t.Error("factors of 1 made a new model")
	}

	// CLIP: the SD2 text encoder of the tiny unCLIP checkpoint.
	clip := e.run(t, "CheckpointLoaderSimple", nodes.Inputs{"ckpt_name": "unclip_tiny.safetensors"})[1].(*sd.CLIP)
	c := e.run(t, "CLIPAttentionMultiply", nodes.Inputs{"clip": clip, "q": 1.5, "k": 1.0, "v": 0.25, "out": 1.0})[0].(*sd.CLIP)
	_, tparams, err := sd.LoRAParams(nil, clip)
	if err != nil {
		t.Fatal(err)
	}
	scaled := 0
	for _, p := range tparams {
		want := 1.0
		switch {
		case strings.Contains(p.Key, "self_attn.q_proj."):
			want = 1.5
		case strings.Contains(p.Key, "self_attn.v_proj."):
			want = 0.25
		}
		b, g := clipParam(t, clip, p.Key), clipParam(t, c, p.Key)
		if want == 1 {
			if b != g {
				t.Errorf("%s: a copy of a weight the node does not scale", p.Key)
			}
			continue
		}
		scaled++
		if g.DType() != b.DType() {
			t.Errorf("%s: dtype %v, stored %v", p.Key, g.DType(), b.DType())
		}
		bv, gv := data(t, b), data(t, g)
		prod := make([]float32, len(bv))
		for i := range bv {
			prod[i] = bv[i] * float32(want)
		}
		wv := storedRound(t, e.rt, b.DType(), prod)
		for i := range gv {
			if gv[i] != wv[i] {
				t.Fatalf("%s[%d] = %v, want %v·%v rounded to %v", p.Key, i, gv[i], bv[i], want, b.DType())
			}
		}
	}
	if scaled == 0 {
		t.Fatal("no CLIP weight scaled")
	}
}

// storedRound rounds v to dtype d (once, to nearest even) and back.
func storedRound(t *testing.T, rt *gpu.Runtime, d gpu.DType, v []float32) []float32 {
	t.Helper()
	n, err := d.StorageBytes(len(v))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, n)
	if err := gpu.EncodeFloat32(d, buf, v); err != nil {
		t.Fatal(err)
	}
	r, err := rt.FromBytes(d, buf, len(v))
	if err != nil {
		t.Fatal(err)
	}
	return data(t, r)
}

// unetParam is the tensor a model's UNet uses for a parameter key.
func unetParam(t *testing.T, m *sd.Model, key string) *gpu.Tensor {
	t.Helper()
	n := m.LoRANetwork()
	if n == nil {
		n = lora.NewNetwork(m.UNet, lora.UNetPrefix, lora.Auto)
	}
	w, err := n.Weight(key)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// clipParam is the tensor a CLIP's text encoders use for a parameter key.
func clipParam(t *testing.T, c *sd.CLIP, key string) *gpu.Tensor {
	t.Helper()
	for _, te := range c.Encoders {
		n := te.LoRANetwork()
		if n == nil {
			n = lora.NewNetwork(te.Encoder.Model, lora.CLIPPrefix(te.Name), lora.Auto)
		}
		if w, err := n.Weight(key); err == nil {
			return w
		}
	}
	t.Fatalf("no text encoder has %s", key)
	return nil
}

// TestTorchCompileAndComputeDtype: both nodes hand the model back unchanged and log
// one info line the first time (TorchCompileModel always; ModelComputeDtype when the
// request is not what the runtime computes in).
func TestTorchCompileAndComputeDtype(t *testing.T) {
	e := newVisionEnv(t)
	base := e.run(t, "UNETLoader", nodes.Inputs{"unet_name": "patch_unet.safetensors", "weight_dtype": "default"})[0]
	var buf bytes.Buffer
	env := &nodes.Env{Logger: slog.New(slog.NewTextHandler(&buf, nil))}
	for i := 0; i < 2; i++ {
		out, err := nodeRun(t, e.r, env, "TorchCompileModel", nodes.Inputs{"model": base, "backend": "inductor"})
		if err != nil || out[0] != base {
			t.Fatalf("TorchCompileModel: %v, same model %v", err, out[0] == base)
		}
		for _, dt := range []string{"default", "fp32", "fp16", "bf16"} {
			out, err := nodeRun(t, e.r, env, "ModelComputeDtype", nodes.Inputs{"model": base, "dtype": dt})
			if err != nil || out[0] != base {
				t.Fatalf("ModelComputeDtype %s: %v", dt, err)
			}
		}
	}
	logs := buf.String()
	if n := strings.Count(logs, "no JIT"); n != 1 {
		t.Errorf("TorchCompileModel logged %d times:\n%s", n, logs)
	}
	if n := strings.Count(logs, "ModelComputeDtype"); n != 1 || !strings.Contains(logs, "requested=fp16") {
		t.Errorf("ModelComputeDtype logged %d times:\n%s", n, logs)
	}
}

// TestDeepShrinkTooSmall: a factor that shrinks the latent to nothing is an error of the
// sampling run (ComfyUI fails inside torch), not a panic.
func TestDeepShrinkTooSmall(t *testing.T) {
	e := newVisionEnv(t)
	base := e.run(t, "UNETLoader", nodes.Inputs{"unet_name": "patch_unet.safetensors", "weight_dtype": "default"})[0]
	m := e.run(t, "PatchModelAddDownscale", nodes.Inputs{"model": base, "block_number": 1, "downscale_factor": 9.0,
		"start_percent": 0.0, "end_percent": 1.0, "downscale_after_skip": true, "downscale_method": "bicubic", "upscale_method": "bicubic"})[0]
	zeros, _ := e.rt.Zeros(gpu.F32, 1, 4, 4, 4) // input block 1 is 4×4: round(4·(1/9)) = 0
	cond := sd.Conditioning{sd.NewCond(mustZeros(t, e.rt, 1, 77, 32), nil)}
	_, err := nodeRun(t, e.r, nil, "KSampler", nodes.Inputs{"model": m, "seed": uint64(1), "steps": 1, "cfg": 1.0,
		"sampler_name": "euler", "scheduler": "normal", "positive": cond, "negative": cond,
		"latent_image": &sd.Latent{Samples: zeros}, "denoise": 1.0})
	if err == nil {
		t.Fatal("a latent shrunk to 0×0 sampled without an error")
	}
	t.Log(err)
}

func mustZeros(t *testing.T, rt *gpu.Runtime, shape ...int) *gpu.Tensor {
	t.Helper()
	z, err := rt.Zeros(gpu.F32, shape...)
	if err != nil {
		t.Fatal(err)
	}
	return z
}
