package builtin

import (
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/nodes"
)

// TestPatchNodesRefpeer applies the model patch nodes with the parameters of
// diffusion/sd's patch fixture (made by ComfyUI 0.3.64's own patch nodes,
// tools/refpeer/patches_ref.py) to the patch UNet and samples with KSampler, or with
// PerpNegGuider and SamplerCustomAdvanced: the latents must be ComfyUI's, so every
// widget reaches the patch it names.
func TestPatchNodesRefpeer(t *testing.T) {
	e := newVisionEnv(t)
	f := sdFixture(t, "patches_refpeer.safetensors")
	var runs []patchRun
	fixtureRuns(t, f, &runs)
	cond := func(name string) sd.Conditioning {
		return sd.Conditioning{sd.NewCond(refTensor(t, e.rt, f, name), nil)}
	}
	pos, neg, empty := cond("pos"), cond("neg"), cond("empty")
	base := e.run(t, "UNETLoader", nodes.Inputs{"unet_name": "patch_unet.safetensors", "weight_dtype": "default"})[0]
	for _, r := range runs {
		t.Run(r.Name, func(t *testing.T) {
			model := base
			var guider []any
			for _, p := range r.Patches {
				num := func(i int) float64 { return p[i].(float64) }
				var class string
				in := nodes.Inputs{"model": model}
				switch p[0] {
				case "freeu", "freeu_v2":
					class = map[any]string{"freeu": "FreeU", "freeu_v2": "FreeU_V2"}[p[0]]
					in["b1"], in["b2"], in["s1"], in["s2"] = num(1), num(2), num(3), num(4)
				case "rescale":
					class, in["multiplier"] = "RescaleCFG", num(1)
				case "pag":
					class, in["scale"] = "PerturbedAttentionGuidance", num(1)
				case "sag":
					class, in["scale"], in["blur_sigma"] = "SelfAttentionGuidance", num(1), num(2)
				case "perpneg":
					class, in["empty_conditioning"], in["neg_scale"] = "PerpNeg", empty, num(1)
				case "fresca":
					class, in["scale_low"], in["scale_high"], in["freq_cutoff"] = "FreSca", num(1), num(2), int(num(3))
				case "edm":
					class, in["sampling"], in["sigma_max"], in["sigma_min"] = "ModelSamplingContinuousEDM", p[1], num(2), num(3)
				case "cont_v":
					class, in["sampling"], in["sigma_max"], in["sigma_min"] = "ModelSamplingContinuousV", "v_prediction", num(1), num(2)
				case "perpneg_guider":
					guider = e.run(t, "PerpNegGuider", nodes.Inputs{"model": model, "positive": pos, "negative": neg,
						"empty_conditioning": empty, "cfg": r.CFG, "neg_scale": num(1)})
					continue
				default:
					t.Fatalf("unknown patch %v", p)
				}
				model = e.run(t, class, in)[0]
			}
			zeros, _ := e.rt.Zeros(gpu.F32, r.Shape...)
			latent := &sd.Latent{Samples: zeros}
			var out *sd.Latent
			if guider != nil {
				noise := e.run(t, "RandomNoise", nodes.Inputs{"noise_seed": r.Seed})[0]
				sampler := e.run(t, "KSamplerSelect", nodes.Inputs{"sampler_name": r.Sampler})[0]
				sigmas := e.run(t, "BasicScheduler", nodes.Inputs{"model": model, "scheduler": r.Scheduler, "steps": r.Steps, "denoise": 1.0})[0]
				out = e.run(t, "SamplerCustomAdvanced", nodes.Inputs{"noise": noise, "guider": guider[0], "sampler": sampler,
					"sigmas": sigmas, "latent_image": latent})[0].(*sd.Latent)
			} else {
				out = e.run(t, "KSampler", nodes.Inputs{"model": model, "seed": r.Seed, "steps": r.Steps, "cfg": r.CFG,
					"sampler_name": r.Sampler, "scheduler": r.Scheduler, "positive": pos, "negative": neg,
					"latent_image": latent, "denoise": 1.0})[0].(*sd.Latent)
			}
			closeTo(t, "latent", data(t, out.Samples), data(t, refTensor(t, e.rt, f, r.Name+".out")), 1e-4)
		})
	}
}
