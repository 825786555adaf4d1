package flux

import (
	"context"
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/sampling"
	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/internal/testenv"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

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
// from it, and the weights' prefix is the case's weight_prefix.
func TestGoldenFlux(t *testing.T) {
	_, cases := testenv.GoldenCases[testenv.Case](t, "flux")
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			f, err := tensorfile.Open(c.Path())
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var unet map[string]json.RawMessage
			if err := c.Decode("config.unet_config", &unet); err != nil {
				t.Fatal(err)
			}
			opts, want := goldenOptions(t, &c, unet)
			spec, err := c.ModelSampling("config.model_sampling")
			if err != nil {
				t.Fatal(err)
			}
			ms, err := sampling.New(sampling.Config(spec))
			if err != nil {
				t.Fatal(c.FieldError("config.model_sampling", "%v", err))
			}
			var prefix string
			if c.Has("weight_prefix") {
				if err := c.Decode("weight_prefix", &prefix); err != nil {
					t.Fatal(err)
				}
			}
			in := map[string]*gpu.Tensor{}
			for _, name := range c.Tensors("in.") {
				if !slices.Contains(fluxInputs, name) {
					t.Fatal(c.FieldError("io_tensors", "input %q is not one this test interprets", name))
				}
				in[name] = goldenTensor(t, rt, f, name)
			}
			outs := c.Tensors("out.")
			for _, name := range outs {
				if !slices.Contains(fluxOutputs, name) {
					t.Fatal(c.FieldError("io_tensors", "output %q is not one this test interprets", name))
				}
			}
			if len(outs) == 0 {
				t.Fatal(c.FieldError("io_tensors", "no output this test checks"))
			}
			m, err := Load(rt, statedict.NewFileSource(rt, f), prefix, opts)
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
			check := func(name string, got *gpu.Tensor) {
				t.Helper()
				if g, w := got.Shape(), c.IO[name].Shape; !slices.Equal(g, w) {
					t.Fatalf("%s: shape %v, want %v", name, g, w)
				}
				testenv.Close(t, name, values(t, got), values(t, goldenTensor(t, rt, f, name)), c.Tolerance)
			}
			if slices.Contains(outs, "out.model_output") {
				out, err := m.Forward(ctx, rt, inputs)
				if err != nil {
					t.Fatal(err)
				}
				check("out.model_output", out)
			}
			if slices.Contains(outs, "out.denoised") {
				if in["in.sigma"] == nil {
					t.Fatal(c.FieldError("io_tensors", "out.denoised needs in.sigma"))
				}
				sigma := values(t, in["in.sigma"])[0]
				if tv := in["in.timestep"]; tv != nil && values(t, tv)[0] != ms.Timestep(sigma) {
					t.Errorf("model sampling maps sigma %v to timestep %v; the case's timestep is %v", sigma, ms.Timestep(sigma), values(t, tv)[0])
				}
				den, err := m.Denoise(ctx, rt, ms, sigma, inputs)
				if err != nil {
					t.Fatal(err)
				}
				check("out.denoised", den)
			}
		})
	}
}

// goldenOptions reads a case's unet_config: Options for what shapes cannot tell, and
// the expected values of what they can. A key it does not know fails the test.
func goldenOptions(t *testing.T, c *testenv.Case, cfg map[string]json.RawMessage) (Options, map[string]any) {
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
				t.Fatal(c.FieldError("config.unet_config.image_model", "%q: only flux is implemented", v))
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
			t.Fatal(c.FieldError("config.unet_config."+k, "%s is not a setting this test interprets", raw))
		}
		if err != nil {
			t.Fatal(c.FieldError("config.unet_config."+k, "%s: %v", raw, err))
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
