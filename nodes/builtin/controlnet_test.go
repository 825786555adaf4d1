package builtin

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/controlnet"
	"github.com/forgeflow/forgeflow/diffusion/sampling"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/nodes"
	"github.com/forgeflow/forgeflow/weights/folders"
	"github.com/forgeflow/forgeflow/weights/memory"
)

// cnUNet is the trunk of the test ControlNet (and T2I-Adapter widths 32…128).
var cnUNet = sd.RandomUNet{ModelChannels: 32, Mult: []int{1, 2}, ResBlocks: 1, Depth: []int{0, 1}, MidDepth: 1, Context: 64}

// controlNetRegistry is a registry over a models folder holding a ControlNet and a
// T2I-Adapter.
func controlNetRegistry(t *testing.T) *nodes.Registry {
	t.Helper()
	base := t.TempDir()
	dir := filepath.Join(base, "models", "controlnet")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, ts := range map[string][]sd.RandomTensor{
		"cn.safetensors":  controlnet.RandomControlNet("", cnUNet, 3, 0),
		"t2i.safetensors": controlnet.RandomAdapter(32, 2, 3, 3, false, false),
	} {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := sd.WriteRandomTensors(f, ts, 3, ""); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	p, err := folders.New(folders.Options{BaseDir: base})
	if err != nil {
		t.Fatal(err)
	}
	return newTestRegistry(t, Options{Models: p, Memory: memory.New(memory.Options{RAMBudget: -1}), Runtime: testRuntime(t)})
}

func conds(t *testing.T, n int) sd.Conditioning {
	t.Helper()
	var c sd.Conditioning
	for i := 0; i < n; i++ {
		e, _ := testRuntime(t).FromFloat32(make([]float32, 4*64), 1, 4, 64)
		c = append(c, sd.NewCond(e, nil))
	}
	return c
}

func TestControlNetApplyNodes(t *testing.T) {
	r := controlNetRegistry(t)
	cn := mustNode(t, r, "ControlNetLoader", nodes.Inputs{"control_net_name": "cn.safetensors"})[0].(*controlnet.Net)
	t2i := mustNode(t, r, "ControlNetLoader", nodes.Inputs{"control_net_name": "t2i.safetensors"})[0].(*controlnet.Net)
	if cn.Model() == nil || t2i.Adapter() == nil {
		t.Fatalf("loaded %s and %s", cn.Kind, t2i.Kind)
	}
	hint := filled(1, 16, 16, 3, 0.5)
	pos, neg := conds(t, 2), conds(t, 1)

	// Advanced: one control per previous control, shared by positive and negative.
	out := mustNode(t, r, "ControlNetApplyAdvanced", nodes.Inputs{"positive": pos, "negative": neg, "control_net": cn,
		"image": hint, "strength": 0.7, "start_percent": 0.2, "end_percent": 0.9})
	p1, n1 := out[0].(sd.Conditioning), out[1].(sd.Conditioning)
	a := p1[0].Control.(*controlnet.Applied)
	if p1[1].Control != a || n1[0].Control != a || p1[0].ControlApplyToUncond {
		t.Error("the entries do not share one control")
	}
	if a.Strength != 0.7 || a.StartPercent != 0.2 || a.EndPercent != 0.9 || a.Previous != nil || a.Hint.C != 3 || a.Hint.H != 16 {
		t.Errorf("applied %+v", a)
	}
	if pos[0].Control != nil {
		t.Error("the input conditioning changed")
	}
	// Chained: the T2I-Adapter after the ControlNet.
	out = mustNode(t, r, "ControlNetApplyAdvanced", nodes.Inputs{"positive": p1, "negative": n1, "control_net": t2i,
		"image": hint, "strength": 1.0, "start_percent": 0.0, "end_percent": 1.0})
	b := out[0].(sd.Conditioning)[0].Control.(*controlnet.Applied)
	if b.Previous != a || out[1].(sd.Conditioning)[0].Control != b {
		t.Error("the second apply does not chain after the first")
	}
	// Strength 0 returns the conditioning untouched.
	out = mustNode(t, r, "ControlNetApplyAdvanced", nodes.Inputs{"positive": pos, "negative": neg, "control_net": cn,
		"image": hint, "strength": 0.0, "start_percent": 0.0, "end_percent": 1.0})
	if out[0].(sd.Conditioning)[0].Control != nil {
		t.Error("strength 0 applied a control")
	}
	// ControlNetApplySD3 is the same with a required VAE.
	rt := testRuntime(t)
	out = mustNode(t, r, "ControlNetApplySD3", nodes.Inputs{"positive": pos, "negative": neg, "control_net": cn,
		"vae": sd.NewPixelSpaceVAE(rt), "image": hint, "strength": 0.5, "start_percent": 0.0, "end_percent": 1.0})
	if c := out[0].(sd.Conditioning)[0].Control.(*controlnet.Applied); c.Strength != 0.5 || out[1].(sd.Conditioning)[0].Control != c {
		t.Error("ControlNetApplySD3 does not apply as ControlNetApplyAdvanced")
	}
	// Old apply: a copy per entry, passed to the negative.
	old := mustNode(t, r, "ControlNetApply", nodes.Inputs{"conditioning": pos, "control_net": cn, "image": hint, "strength": 1.0})[0].(sd.Conditioning)
	if old[0].Control == old[1].Control || !old[0].ControlApplyToUncond {
		t.Error("ControlNetApply shares controls or does not pass them to the negative")
	}
}

func TestSetUnionControlNetType(t *testing.T) {
	r := controlNetRegistry(t)
	cn := mustNode(t, r, "ControlNetLoader", nodes.Inputs{"control_net_name": "cn.safetensors"})[0].(*controlnet.Net)
	for typ, want := range map[string][]int{"auto": nil, "openpose": {0}, "canny/lineart/anime_lineart/mlsd": {3}, "repaint": {7}} {
		got := mustNode(t, r, "SetUnionControlNetType", nodes.Inputs{"control_net": cn, "type": typ})[0].(*controlnet.Net)
		if !slices.Equal(got.ControlType(), want) {
			t.Errorf("%s: control type %v, want %v", typ, got.ControlType(), want)
		}
	}
	if len(cn.ControlType()) != 0 {
		t.Error("SetUnionControlNetType changed its input")
	}
	_, err := nodeRun(t, r, nil, "ControlNetLoader", nodes.Inputs{"control_net_name": "missing.safetensors"})
	wantErr(t, err, "missing.safetensors")
}

func TestSetLatentNoiseMask(t *testing.T) {
	rt := testRuntime(t)
	z, _ := rt.Zeros(gpu.F32, 2, 4, 8, 8)
	l := &sd.Latent{Samples: z, BatchIndex: []int{3, 4}}
	m := &Mask{Batch: 1, Height: 64, Width: 64, Pix: make([]float32, 64*64)}
	out := mustRun(t, "SetLatentNoiseMask", nodes.Inputs{"samples": l, "mask": m}).Outputs[0].(*sd.Latent)
	checkShape(t, out.NoiseMask.Shape(), []int{1, 1, 64, 64})
	if out.Samples != z || !slices.Equal(out.BatchIndex, l.BatchIndex) || l.NoiseMask != nil {
		t.Error("SetLatentNoiseMask does not copy the latent dict")
	}
}

func TestInpaintGrowMask(t *testing.T) {
	// One set pixel at (2, 2) of a 5×5 mask (0.6 rounds to 1). grow 3 pads 1: the 3×3
	// block around it; grow 2 pads 1 with a 2×2 box: rows and columns 2…3 (windows
	// y−1…y); grow 0 is the rounded mask.
	m := &Mask{Batch: 1, Height: 5, Width: 5, Pix: make([]float32, 25)}
	m.Pix[12] = 0.6
	m.Pix[0] = 0.5 // rounds to 0 (half to even)
	for _, tc := range []struct {
		g    int
		want []int // set pixels
	}{{0, []int{12}}, {2, []int{12, 13, 17, 18}}, {3, []int{6, 7, 8, 11, 12, 13, 16, 17, 18}}} {
		got := growMask(m, tc.g)
		var set []int
		for i, v := range got.Pix {
			if v == 1 {
				set = append(set, i)
			} else if v != 0 {
				t.Fatalf("grow %d: value %v", tc.g, v)
			}
		}
		if !slices.Equal(set, tc.want) {
			t.Errorf("grow %d: set %v, want %v", tc.g, set, tc.want)
		}
	}
}

func TestDifferentialDiffusionNode(t *testing.T) {
	m := &sd.Model{Sampling: sampling.NewSD(sampling.EPS), Runtime: testRuntime(t)}
	for _, in := range []nodes.Inputs{{"model": m}, {"model": m, "strength": 0.5}} {
		out := mustRun(t, "DifferentialDiffusion", in)
		if out.Outputs[0].(*sd.Model).DenoiseMask == nil {
			t.Fatal("no denoise mask function")
		}
	}
	// At the first sigma the threshold is 1: only a full mask passes; at the last, 0.
	ms := m.Sampling
	sigmas := []float32{ms.SigmaMax(), 3, 0}
	f := sd.DifferentialDiffusion(1)
	mask := []float32{0, 0.5, 0.999, 1}
	if got := f(m, sigmas[0], sigmas, mask); !slices.Equal(got, []float32{0, 0, 0, 1}) {
		t.Errorf("first step: %v", got)
	}
	if got := f(m, ms.SigmaMin(), sigmas, mask); !slices.Equal(got, []float32{1, 1, 1, 1}) {
		t.Errorf("last step: %v", got)
	}
	// strength 0.5 blends: 0.5·binary + 0.5·mask.
	if got := sd.DifferentialDiffusion(0.5)(m, sigmas[0], sigmas, mask); !slices.Equal(got, []float32{0, 0.25, 0.4995, 1}) {
		t.Errorf("strength 0.5: %v", got)
	}
}
