package flux

import (
	"context"
	"encoding/json"
	"math"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/sampling"
	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/internal/testenv"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// fluxCase is a golden/flux case as its file's __metadata__['case'] (and the manifest)
// describe it.
type fluxCase struct {
	Case   string `json:"case"`
	File   string `json:"file"`
	Config struct {
		ModelSampling string                     `json:"model_sampling"`
		UNet          map[string]json.RawMessage `json:"unet_config"`
	} `json:"config"`
	Tensors      map[string]string          `json:"tensors"`
	Tolerance    struct{ Abs, Rel float64 } `json:"tolerance"`
	WeightPrefix string                     `json:"weight_prefix"`
	IOTensors    map[string]json.RawMessage `json:"io_tensors"`
}

// fluxInputs are the in. tensors a case may hold, and the out. tensors it may check;
// any other name fails the case as one this test cannot interpret.
var (
	fluxInputs  = []string{"in.x", "in.timestep", "in.sigma", "in.context", "in.y", "in.guidance"}
	fluxOutputs = []string{"out.model_output", "out.denoised"}
)

// TestGoldenFlux runs every case of golden/flux: Flux.forward's output and
// model_base.Flux.apply_model's denoised latent, each within the case's tolerance. The
// configuration is read from the weights' shapes and checked against the case's
// unet_config; only axes_dim, theta and patch_size (which shapes cannot tell) are taken
// from it.
func TestGoldenFlux(t *testing.T) {
	dir, cases := testenv.GoldenCases[fluxCase](t, "flux")
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, mc := range cases {
		t.Run(mc.Case, func(t *testing.T) {
			f, err := tensorfile.Open(filepath.Join(dir, mc.File))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var c fluxCase
			if err := json.Unmarshal([]byte(f.Metadata()["case"]), &c); err != nil {
				t.Fatalf("%s: __metadata__['case']: %v", mc.File, err)
			}
			if c.Case != mc.Case {
				t.Fatalf("%s: metadata names case %q, the manifest %q", mc.File, c.Case, mc.Case)
			}
			opts, want := goldenOptions(t, c.Config.UNet)
			ms := goldenSampling(t, c.Config.ModelSampling)
			in := map[string]*gpu.Tensor{}
			for _, info := range f.Tensors() {
				switch {
				case strings.HasPrefix(info.Name, "in."):
					if !slices.Contains(fluxInputs, info.Name) {
						t.Fatalf("input tensor %q (%s) is not one this test interprets", info.Name, c.Tensors[info.Name])
					}
					in[info.Name] = goldenTensor(t, rt, f, info.Name)
				case strings.HasPrefix(info.Name, "out."):
					if !slices.Contains(fluxOutputs, info.Name) {
						t.Fatalf("output tensor %q (%s) is not one this test interprets", info.Name, c.Tensors[info.Name])
					}
				}
			}
			m, err := Load(rt, statedict.NewFileSource(rt, f), c.WeightPrefix, opts)
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range m.Unused {
				if !strings.HasPrefix(k, "in.") && !strings.HasPrefix(k, "out.") {
					t.Errorf("weight %q was not used", k)
				}
			}
			checkConfig(t, m, want)
			inputs := Inputs{X: in["in.x"], Timesteps: in["in.timestep"], Context: in["in.context"], Y: in["in.y"], Guidance: in["in.guidance"]}
			checked := 0
			if _, ok := f.Info("out.model_output"); ok {
				out, err := m.Forward(ctx, rt, inputs)
				if err != nil {
					t.Fatal(err)
				}
				compare(t, "out.model_output", out, goldenTensor(t, rt, f, "out.model_output"), c.Tolerance.Abs, c.Tolerance.Rel)
				checked++
			}
			if _, ok := f.Info("out.denoised"); ok {
				sv, err := in["in.sigma"].Float32()
				if err != nil || len(sv) == 0 {
					t.Fatalf("out.denoised needs in.sigma: %v", err)
				}
				if tv := in["in.timestep"]; tv != nil {
					v, _ := tv.Float32()
					if v[0] != ms.Timestep(sv[0]) {
						t.Errorf("model sampling maps sigma %v to timestep %v; the case's timestep is %v", sv[0], ms.Timestep(sv[0]), v[0])
					}
				}
				den, err := m.Denoise(ctx, rt, ms, sv[0], inputs)
				if err != nil {
					t.Fatal(err)
				}
				compare(t, "out.denoised", den, goldenTensor(t, rt, f, "out.denoised"), c.Tolerance.Abs, c.Tolerance.Rel)
				checked++
			}
			if checked == 0 {
				t.Fatal("the case has no output this test checks")
			}
		})
	}
}

// goldenOptions reads a case's unet_config: Options for what shapes cannot tell, and
// the expected values of what they can. A key it does not know fails the test.
func goldenOptions(t *testing.T, cfg map[string]json.RawMessage) (Options, map[string]any) {
	t.Helper()
	var opts Options
	want := map[string]any{}
	for k, raw := range cfg {
		var err error
		switch k {
		case "axes_dim":
			err = json.Unmarshal(raw, &opts.AxesDim)
		case "theta":
			err = json.Unmarshal(raw, &opts.Theta)
		case "patch_size":
			err = json.Unmarshal(raw, &opts.PatchSize)
		case "hidden_size", "num_heads", "depth", "depth_single_blocks", "in_channels", "out_channels", "context_in_dim", "vec_in_dim":
			var v int
			err = json.Unmarshal(raw, &v)
			want[k] = v
		case "mlp_ratio":
			var v float64
			err = json.Unmarshal(raw, &v)
			want[k] = v
		case "qkv_bias", "guidance_embed":
			var v bool
			err = json.Unmarshal(raw, &v)
			want[k] = v
		case "image_model":
			var v string
			if err = json.Unmarshal(raw, &v); err == nil && v != "flux" {
				t.Fatalf("unet_config image_model %q: only flux is implemented", v)
			}
		case "dtype":
			// The compute dtype: forgeflow computes in float32 whatever the weights are;
			// a case computed in a narrower type carries a tolerance that allows for it.
			var v string
			err = json.Unmarshal(raw, &v)
			if v != "float32" {
				t.Logf("unet_config dtype %s: forgeflow computes in float32", v)
			}
		default:
			t.Fatalf("unet_config key %q (%s) is not one this test interprets", k, raw)
		}
		if err != nil {
			t.Fatalf("unet_config %s = %s: %v", k, raw, err)
		}
	}
	return opts, want
}

// checkConfig compares the configuration read from the shapes with the case's.
func checkConfig(t *testing.T, m *Model, want map[string]any) {
	t.Helper()
	c := m.Config
	got := map[string]any{
		"hidden_size": c.HiddenSize, "num_heads": c.NumHeads, "depth": c.Depth, "depth_single_blocks": c.DepthSingleBlocks,
		"in_channels": c.InChannels, "out_channels": c.OutChannels, "context_in_dim": c.ContextInDim, "vec_in_dim": c.VecInDim,
		"mlp_ratio": c.MLPRatio, "qkv_bias": c.QKVBias, "guidance_embed": c.GuidanceEmbed,
	}
	for k, w := range want {
		if k == "mlp_ratio" {
			if g := m.MLPHidden; g != int(float64(c.HiddenSize)*w.(float64)) {
				t.Errorf("MLP width %d from the shapes, unet_config mlp_ratio %v gives %d", g, w, int(float64(c.HiddenSize)*w.(float64)))
			}
			continue
		}
		if !reflect.DeepEqual(got[k], w) {
			t.Errorf("%s = %v from the shapes, unet_config says %v", k, got[k], w)
		}
	}
}

// goldenSampling builds the model sampling a case names, e.g. "ModelSamplingFlux+CONST
// shift 1.15" or "ModelSamplingDiscreteFlow+CONST shift 1.0 multiplier 1.0".
func goldenSampling(t *testing.T, desc string) sampling.ModelSampling {
	t.Helper()
	fields := strings.Fields(desc)
	if len(fields) == 0 || len(fields)%2 != 1 {
		t.Fatalf("config model_sampling %q: want \"Name+CONST\" and key value pairs", desc)
	}
	name, kind, _ := strings.Cut(fields[0], "+")
	if kind != "CONST" {
		t.Fatalf("config model_sampling %q: only CONST (flow) prediction is interpreted", desc)
	}
	params := map[string]float64{"shift": 1.15, "multiplier": 1}
	for i := 1; i < len(fields); i += 2 {
		v, err := strconv.ParseFloat(fields[i+1], 64)
		if _, known := params[fields[i]]; !known || err != nil {
			t.Fatalf("config model_sampling %q: parameter %q = %q is not interpreted", desc, fields[i], fields[i+1])
		}
		params[fields[i]] = v
	}
	switch name {
	case "ModelSamplingFlux":
		return sampling.NewFlux(params["shift"])
	case "ModelSamplingDiscreteFlow":
		return sampling.NewFlowShift(params["shift"], params["multiplier"], 1000)
	}
	t.Fatalf("config model_sampling %q: %s is not interpreted", desc, name)
	return nil
}

func goldenTensor(t *testing.T, rt *gpu.Runtime, f *tensorfile.File, name string) *gpu.Tensor {
	t.Helper()
	tn, err := f.Tensor(name)
	if err != nil {
		t.Fatal(err)
	}
	v, err := tn.Float32()
	if err != nil {
		t.Fatal(err)
	}
	shape := make([]int, len(tn.Shape))
	for i, d := range tn.Shape {
		shape[i] = int(d)
	}
	g, err := rt.FromFloat32(v, shape...)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// compare checks |got − want| ≤ abs + rel·|want| element-wise; NaN never passes.
func compare(t *testing.T, name string, got, want *gpu.Tensor, abs, rel float64) {
	t.Helper()
	if !slices.Equal(got.Shape(), want.Shape()) {
		t.Fatalf("%s: shape %v, want %v", name, got.Shape(), want.Shape())
	}
	g, err := got.Float32()
	if err != nil {
		t.Fatal(err)
	}
	w, _ := want.Float32()
	bad, worst, at, used := 0, 0.0, 0, 0.0
	for i := range w {
		d := math.Abs(float64(g[i]) - float64(w[i]))
		lim := abs + rel*math.Abs(float64(w[i]))
		used = max(used, d/lim)
		if !(d <= lim) {
			bad++
			if math.IsNaN(d) || d-lim > worst {
				worst, at = d-lim, i
			}
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d values out of tolerance; worst [%d] = %v, want %v", name, bad, len(w), at, g[at], w[at])
	} else {
		t.Logf("%s: %d values within abs %g rel %g (at most %.1f%% of the allowance)", name, len(w), abs, rel, 100*used)
	}
}
