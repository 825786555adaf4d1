package unet

import (
	"context"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/sampling"
	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/internal/testenv"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// admFunction is the parameter-free function of the unet family's ADM cases, and
// admEmbedder the size embedding EncodeADM implements.
const (
	admFunction = "comfy.model_base.SDXL.encode_adm"
	admEmbedder = "Timestep(256)"
)

// TestGoldenUNet runs every case of golden/unet: a model case (config.unet_config) runs
// the raw UNet on its inputs (single and batched) and BaseModel.apply_model with the
// wrapper's model sampling; an encode_adm case builds SDXL's ADM vector from its kwargs.
func TestGoldenUNet(t *testing.T) {
	_, cases := testenv.GoldenCases[testenv.Case](t, "unet")
	models := map[string]testenv.UNet{}
	for _, u := range testenv.GoldenUNets(t) {
		models[u.Name] = u
	}
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
			// tensor loads an in./out. tensor the manifest lists; nil when it lists none.
			tensor := func(name string) *gpu.Tensor {
				t.Helper()
				if _, ok := c.IO[name]; !ok {
					return nil
				}
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
			check := func(name string, got *gpu.Tensor) {
				t.Helper()
				want := tensor(name)
				if want == nil {
					t.Fatal(c.FieldError("io_tensors", "lists no %s", name))
				}
				g, err := got.Float32()
				if err != nil {
					t.Fatal(err)
				}
				w, err := want.Float32()
				if err != nil {
					t.Fatal(err)
				}
				testenv.Close(t, name, g, w, c.Tolerance)
			}
			u, isModel := models[c.Name]
			if !isModel {
				var fn, emb string
				if err := c.Decode("config.function", &fn); err != nil {
					t.Fatal(c.FieldError("config", "neither a UNet (unet_config) nor a function"))
				}
				if fn != admFunction {
					t.Fatal(c.FieldError("config.function", "%q: this test knows %s", fn, admFunction))
				}
				if err := c.Decode("config.embedder", &emb); err != nil || emb != admEmbedder {
					t.Fatal(c.FieldError("config.embedder", "%q: EncodeADM embeds sizes with %s", emb, admEmbedder))
				}
				var k map[string]*int
				if err := c.Decode("config.kwargs", &k); err != nil {
					t.Fatal(err)
				}
				var size SizeConditioning
				for key, dst := range map[string]*int{"width": &size.Width, "height": &size.Height, "crop_w": &size.CropW,
					"crop_h": &size.CropH, "target_width": &size.TargetWidth, "target_height": &size.TargetHeight} {
					if k[key] == nil {
						t.Fatal(c.FieldError("config.kwargs."+key, "missing"))
					}
					*dst = *k[key]
				}
				if len(k) != 6 {
					t.Fatal(c.FieldError("config.kwargs", "holds %d arguments, encode_adm takes the six sizes", len(k)))
				}
				pooled := tensor("in.pooled_output")
				if pooled == nil {
					t.Fatal(c.FieldError("io_tensors", "lists no in.pooled_output"))
				}
				y, err := EncodeADM(rt, pooled, size)
				if err != nil {
					t.Fatal(err)
				}
				check("out.adm", y)
				return
			}
			heads := Heads{Count: u.Heads}
			if u.HeadDim > 0 {
				heads = Heads{Dim: u.HeadDim}
			}
			m, err := Load(rt, statedict.NewFileSource(rt, f), u.Prefix, heads)
			if err != nil {
				t.Fatal(err)
			}
			eps, err := m.Forward(ctx, rt, Inputs{X: tensor("in.x"), Timesteps: tensor("in.timesteps"), Context: tensor("in.context"), Y: tensor("in.y")})
			if err != nil {
				t.Fatal(err)
			}
			check("out.eps", eps)
			if xb := tensor("in.x_b"); xb != nil {
				epsB, err := m.Forward(ctx, rt, Inputs{X: xb, Timesteps: tensor("in.timesteps_b"), Context: tensor("in.context_b"), Y: tensor("in.y_b")})
				if err != nil {
					t.Fatal(err)
				}
				check("out.eps_b", epsB)
			}
			sig := tensor("in.sigma")
			if sig == nil {
				return
			}
			// BaseModel.apply_model: scale the input, map sigma to the model's timestep,
			// run the UNet, turn its output into the denoised latent.
			ms, err := sampling.New(sampling.Config(u.Sampling))
			if err != nil {
				t.Fatal(c.FieldError("config.wrapper", "%v", err))
			}
			sv, _ := sig.Float32()
			sigma := sv[0]
			xv, _ := tensor("in.x").Float32()
			xin := make([]float32, len(xv))
			sampling.CalculateInput(ms.Prediction(), sigma, xv, xin)
			ts := ms.Timestep(sigma)
			tt, _ := rt.FromFloat32([]float32{ts}, 1)
			check("out.apply_model_t", tt)
			xt, _ := rt.FromFloat32(xin, tensor("in.x").Shape()...)
			e, err := m.Forward(ctx, rt, Inputs{X: xt, Timesteps: tt, Context: tensor("in.context"), Y: tensor("in.y")})
			if err != nil {
				t.Fatal(err)
			}
			ev, _ := e.Float32()
			den := make([]float32, len(xv))
			sampling.CalculateDenoised(ms.Prediction(), sigma, ev, xv, den)
			dt, _ := rt.FromFloat32(den, tensor("in.x").Shape()...)
			check("out.denoised", dt)
		})
	}
}
