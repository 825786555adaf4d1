package unet

import (
	"context"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/sampling"
	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/internal/testenv"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

type unetCase struct {
	Case, File string
	Config     struct {
		UNet struct {
			NumHeads        int `json:"num_heads"`
			NumHeadChannels int `json:"num_head_channels"`
		} `json:"unet_config"`
		Kwargs struct {
			Width        int `json:"width"`
			Height       int `json:"height"`
			CropW        int `json:"crop_w"`
			CropH        int `json:"crop_h"`
			TargetWidth  int `json:"target_width"`
			TargetHeight int `json:"target_height"`
		} `json:"kwargs"`
	}
	Tolerance struct{ Abs, Rel float64 }
}

// TestGoldenUNet runs every case of golden/unet: the raw UNet output (single and
// batched), BaseModel.apply_model's denoised output, and SDXL's ADM vector.
func TestGoldenUNet(t *testing.T) {
	dir, cases := testenv.GoldenCases[unetCase](t, "unet")
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, c := range cases {
		t.Run(c.Case, func(t *testing.T) {
			f, err := tensorfile.Open(filepath.Join(dir, c.File))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			tensor := func(name string) *gpu.Tensor {
				t.Helper()
				if _, ok := f.Info(name); !ok {
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
				g, err := got.Float32()
				if err != nil {
					t.Fatal(err)
				}
				w, err := tensor(name).Float32()
				if err != nil {
					t.Fatal(err)
				}
				if len(g) != len(w) {
					t.Fatalf("%s: %d values, want %d", name, len(g), len(w))
				}
				for i := range w {
					if d := math.Abs(float64(g[i] - w[i])); d > c.Tolerance.Abs+c.Tolerance.Rel*math.Abs(float64(w[i])) {
						t.Fatalf("%s[%d] = %v, want %v", name, i, g[i], w[i])
					}
				}
			}
			if strings.HasPrefix(c.Case, "sdxl_encode_adm") {
				k := c.Config.Kwargs
				y, err := EncodeADM(rt, tensor("in.pooled_output"), SizeConditioning{Width: k.Width, Height: k.Height, CropW: k.CropW, CropH: k.CropH, TargetWidth: k.TargetWidth, TargetHeight: k.TargetHeight})
				if err != nil {
					t.Fatal(err)
				}
				check("out.adm", y)
				return
			}
			heads := Heads{Count: c.Config.UNet.NumHeads}
			if c.Config.UNet.NumHeadChannels > 0 {
				heads = Heads{Dim: c.Config.UNet.NumHeadChannels}
			}
			m, err := Load(rt, statedict.NewFileSource(rt, f), "model.diffusion_model.", heads)
			if err != nil {
				t.Fatal(err)
			}
			eps, err := m.Forward(ctx, rt, Inputs{X: tensor("in.x"), Timesteps: tensor("in.timesteps"), Context: tensor("in.context"), Y: tensor("in.y")})
			if err != nil {
				t.Fatal(err)
			}
			check("out.eps", eps)
			epsB, err := m.Forward(ctx, rt, Inputs{X: tensor("in.x_b"), Timesteps: tensor("in.timesteps_b"), Context: tensor("in.context_b"), Y: tensor("in.y_b")})
			if err != nil {
				t.Fatal(err)
			}
			check("out.eps_b", epsB)

			// BaseModel.apply_model: scale the input, map sigma to the nearest timestep,
			// run the UNet, turn eps into the denoised latent.
			ms := sampling.NewSD(sampling.EPS)
			sv, _ := tensor("in.sigma").Float32()
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
