package builtin

import (
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/nodes"
)

// TestCondGuideNodesRefpeer builds the conditionings of diffusion/sd's regional
// conditioning fixture (made by ComfyUI 0.3.64's own nodes,
// tools/refpeer/condguide_ref.py) with ConditioningSetMask, ConditioningSetAreaPercentage,
// ConditioningSetAreaStrength, ConditioningSetArea and ConditioningCombine, patches the
// patch UNet with CFGZeroStar, APG, TCFG, Mahiro and "Epsilon Scaling", and samples with
// KSampler: the latents must be ComfyUI's, end to end through the nodes.
func TestCondGuideNodesRefpeer(t *testing.T) {
	e := newVisionEnv(t)
	f := sdFixture(t, "condguide_refpeer.safetensors")
	type entry struct {
		Ctx string  `json:"ctx"`
		Ops [][]any `json:"ops"`
	}
	var runs []struct {
		Name     string  `json:"name"`
		Steps    int     `json:"steps"`
		CFG      float64 `json:"cfg"`
		Seed     uint64  `json:"seed"`
		Shape    []int   `json:"shape"`
		Positive []entry `json:"positive"`
		Negative []entry `json:"negative"`
		Patches  [][]any `json:"patches"`
	}
	fixtureRuns(t, f, &runs)
	mask := func(name string) *Mask {
		g := refTensor(t, e.rt, f, name)
		return &Mask{Batch: g.Dim(0), Height: g.Dim(1), Width: g.Dim(2), Pix: data(t, g)}
	}
	build := func(t *testing.T, entries []entry) sd.Conditioning {
		var out any
		for _, en := range entries {
			var c any = sd.Conditioning{sd.NewCond(refTensor(t, e.rt, f, en.Ctx), nil)}
			for _, op := range en.Ops {
				num := func(i int) float64 { return op[i].(float64) }
				in := nodes.Inputs{"conditioning": c}
				var class string
				switch op[0] {
				case "mask":
					class, in["mask"], in["strength"], in["set_cond_area"] = "ConditioningSetMask", mask(op[1].(string)), num(2), op[3]
				case "area_pct":
					class = "ConditioningSetAreaPercentage"
					in["width"], in["height"], in["x"], in["y"], in["strength"] = num(1), num(2), num(3), num(4), num(5)
				case "strength":
					class, in["strength"] = "ConditioningSetAreaStrength", num(1)
				case "area":
					class = "ConditioningSetArea"
					in["width"], in["height"], in["x"], in["y"], in["strength"] = int64(num(1)), int64(num(2)), int64(num(3)), int64(num(4)), num(5)
				default:
					t.Fatalf("unknown op %v", op)
				}
				c = e.run(t, class, in)[0]
			}
			if out == nil {
				out = c
			} else {
				out = e.run(t, "ConditioningCombine", nodes.Inputs{"conditioning_1": out, "conditioning_2": c})[0]
			}
		}
		return out.(sd.Conditioning)
	}
	base := e.run(t, "UNETLoader", nodes.Inputs{"unet_name": "patch_unet.safetensors", "weight_dtype": "default"})[0]
	for _, r := range runs {
		t.Run(r.Name, func(t *testing.T) {
			model := base
			for _, p := range r.Patches {
				num := func(i int) float64 { return p[i].(float64) }
				in := nodes.Inputs{"model": model}
				var class string
				switch p[0] {
				case "cfgzero":
					class = "CFGZeroStar"
				case "apg":
					class, in["eta"], in["norm_threshold"], in["momentum"] = "APG", num(1), num(2), num(3)
				case "tcfg":
					class = "TCFG"
				case "mahiro":
					class = "Mahiro"
				case "eps":
					class, in["scaling_factor"] = "Epsilon Scaling", num(1)
				default:
					t.Fatalf("unknown patch %v", p)
				}
				model = e.run(t, class, in)[0]
			}
			zeros, _ := e.rt.Zeros(gpu.F32, r.Shape...)
			out := e.run(t, "KSampler", nodes.Inputs{"model": model, "seed": r.Seed, "steps": r.Steps, "cfg": r.CFG,
				"sampler_name": "euler", "scheduler": "normal", "positive": build(t, r.Positive), "negative": build(t, r.Negative),
				"latent_image": &sd.Latent{Samples: zeros}, "denoise": 1.0})[0].(*sd.Latent)
			closeTo(t, "latent", data(t, out.Samples), data(t, refTensor(t, e.rt, f, "run."+r.Name)), 1e-4)
		})
	}
}

// TestConditioningRegionNodes checks what each node sets on the entries, and that the
// nodes replace one another's areas as ComfyUI's single "area" key does.
func TestConditioningRegionNodes(t *testing.T) {
	rt := testRuntime(t)
	emb, _ := rt.Zeros(gpu.F32, 1, 2, 4)
	c := sd.Conditioning{sd.NewCond(emb, nil), sd.NewCond(emb, nil)}
	m := &Mask{Batch: 1, Height: 2, Width: 2, Pix: []float32{0, 1, 0.5, 0}}
	masked := mustRun(t, "ConditioningSetMask", nodes.Inputs{"conditioning": c, "mask": m, "strength": 0.7, "set_cond_area": "mask bounds"}).Outputs[0].(sd.Conditioning)
	for _, e := range masked {
		if e.Mask == nil || e.Mask.N != 1 || e.Mask.H != 2 || e.Mask.W != 2 || e.MaskStrength != 0.7 || !e.SetAreaToBounds || e.Strength != 1 {
			t.Fatalf("ConditioningSetMask entry %+v", e)
		}
	}
	if c[0].Mask != nil {
		t.Fatal("ConditioningSetMask changed its input")
	}
	pct := mustRun(t, "ConditioningSetAreaPercentage", nodes.Inputs{"conditioning": masked, "width": 0.5, "height": 0.25,
		"x": 0.1, "y": 0.2, "strength": 1.5}).Outputs[0].(sd.Conditioning)
	if e := pct[1]; e.AreaPercent == nil || *e.AreaPercent != (sd.AreaPercent{Width: 0.5, Height: 0.25, X: 0.1, Y: 0.2}) ||
		e.Area != nil || e.Strength != 1.5 || e.SetAreaToBounds || e.Mask == nil {
		t.Fatalf("ConditioningSetAreaPercentage entry %+v", e)
	}
	area := mustRun(t, "ConditioningSetArea", nodes.Inputs{"conditioning": pct, "width": int64(64), "height": int64(128), "x": int64(8), "y": int64(16),
		"strength": 2.0}).Outputs[0].(sd.Conditioning)
	if e := area[0]; e.AreaPercent != nil || e.Area == nil || *e.Area != (sd.Area{Height: 16, Width: 8, Y: 2, X: 1}) {
		t.Fatalf("ConditioningSetArea entry %+v", e)
	}
	st := mustRun(t, "ConditioningSetAreaStrength", nodes.Inputs{"conditioning": area, "strength": 0.3}).Outputs[0].(sd.Conditioning)
	if e := st[0]; e.Strength != 0.3 || e.Area == nil {
		t.Fatalf("ConditioningSetAreaStrength entry %+v", e)
	}
}
