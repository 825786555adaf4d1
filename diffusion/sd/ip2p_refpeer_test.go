package sd

import (
	"context"
	"encoding/json"
	"flag"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/unet"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights/detect"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

var writeIP2PModel = flag.String("sd.ip2pmodel", "", "write the tiny InstructPix2Pix UNet of the IP2P reference to this folder")

// TestIP2PAgainstComfyUI samples a tiny InstructPix2Pix UNet (the inpainting reference
// spec with 8 input channels) as ComfyUI 0.3.64's SD15_instructpix2pix does. The
// expected latents were made by tools/refpeer/ip2p_ref.py (ComfyUI's own code in the
// refpeer chroot: comfy.sample.sample, euler, 4 steps, cfg 4, seed 7) on the file this
// test writes; the fixture records its sha256. Cases: the image latent of the latent's
// size in both conditionings; one of another size (resized bilinearly, centre crop);
// none (zeros); a batch of two latents with one image latent; the image latent in the
// positive only (entries with and without their own image latent).
func TestIP2PAgainstComfyUI(t *testing.T) {
	if *writeIP2PModel != "" {
		writeInpaintRefUNet(t, *writeIP2PModel, "unet_ip2p.safetensors", 8, 13)
		return
	}
	if testing.Short() {
		t.Skip("writes a 13 MB UNet and samples 5 runs")
	}
	fx, err := safetensors.Open("testdata/ip2p_refpeer.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	defer fx.Close()
	var sums map[string]string
	if err := json.Unmarshal([]byte(fx.Metadata()["models"]), &sums); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if sum := writeInpaintRefUNet(t, dir, "unet_ip2p.safetensors", 8, 13); sum != sums["unet_ip2p.safetensors"] {
		t.Fatalf("unet_ip2p.safetensors: sha256 %s, the reference used %s", sum, sums["unet_ip2p.safetensors"])
	}
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ck, err := LoadCheckpoint(rt, filepath.Join(dir, "unet_ip2p.safetensors"), LoadOptions{UNetHeads: unet.Heads{Dim: 64}, SkipCLIP: true, SkipVAE: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	m := ck.Model
	if !m.IP2P || m.isInpaintModel() || ck.Detected.Diffusion.Variant != "instructpix2pix" {
		t.Fatalf("IP2P %v, inpaint %v, variant %q", m.IP2P, m.isInpaintModel(), ck.Detected.Diffusion.Variant)
	}
	tensor := func(name string) *gpu.Tensor {
		tn, err := fx.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		v, err := tn.Float32()
		if err != nil {
			t.Fatal(err)
		}
		var shape []int
		for _, d := range tn.Shape {
			shape = append(shape, int(d))
		}
		g, err := rt.FromFloat32(v, shape...)
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	posT, negT := tensor("in.pos"), tensor("in.neg")
	zeros, _ := rt.Zeros(gpu.F32, 1, 4, 8, 8)
	cond := func(emb, concat *gpu.Tensor) Conditioning {
		c := NewCond(emb, nil)
		c.ConcatLatent = concat
		return Conditioning{c}
	}
	concat, odd := tensor("in.concat"), tensor("in.concat_odd")
	params := KSamplerParams{Seed: 7, Steps: 4, CFG: 4, Sampler: "euler", Scheduler: "normal", Denoise: 1, StartStep: -1, LastStep: -1}
	for _, tc := range []struct {
		name     string
		pos, neg *gpu.Tensor // concat_latent_image of each, nil for none
		samples  *gpu.Tensor
	}{
		{"concat", concat, concat, zeros},
		{"resized", odd, odd, zeros},
		{"none", nil, nil, zeros},
		{"batch", concat, concat, tensor("in.latent2")},
		{"mixed", concat, nil, zeros},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := KSample(context.Background(), m, cond(posT, tc.pos), cond(negT, tc.neg), &Latent{Samples: tc.samples}, params, nil)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := out.Samples.Float32()
			wt, err := fx.Tensor("out." + tc.name)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := wt.Float32()
			if len(got) != len(want) {
				t.Fatalf("%d values, want %d", len(got), len(want))
			}
			var maxd, maxw float64
			for i := range want {
				maxd = max(maxd, math.Abs(float64(got[i]-want[i])))
				maxw = max(maxw, math.Abs(float64(want[i])))
			}
			t.Logf("max |Δ| %.3g (max |want| %.3g)", maxd, maxw)
			if maxd > 2e-4*(1+maxw) {
				t.Errorf("max |Δ| %.3g", maxd)
			}
		})
	}
	t.Run("wrong_channels", func(t *testing.T) {
		bad, _ := rt.Zeros(gpu.F32, 1, 3, 8, 8)
		if _, err := KSample(context.Background(), m, cond(posT, bad), cond(negT, nil), &Latent{Samples: zeros}, params, nil); err == nil {
			t.Fatal("a 3-channel image latent was accepted")
		}
	})
}

// TestSDXLIP2PCheckpoint: a tiny SDXL-layout checkpoint with an 8-channel UNet loads as
// InstructPix2Pix (SDXL_instructpix2pix: label vector and image latent both) and
// samples; another image latent gives another result. Self-consistency only: the
// SDXL path shares ip2pConcat with the SD1 one TestIP2PAgainstComfyUI checks.
func TestSDXLIP2PCheckpoint(t *testing.T) {
	spec := TinyRandomSpec(detect.FamilySDXL)
	spec.UNet.InChannels = 8
	p := filepath.Join(t.TempDir(), "xl_ip2p.safetensors")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteRandomCheckpoint(f, spec); err != nil {
		t.Fatal(err)
	}
	f.Close()
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ck, err := LoadCheckpoint(rt, p, LoadOptions{SkipCLIP: true, SkipVAE: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	if !ck.Model.IP2P || !ck.Model.ADM || ck.Family != detect.FamilySDXL {
		t.Fatalf("IP2P %v ADM %v family %s", ck.Model.IP2P, ck.Model.ADM, ck.Family)
	}
	emb := make([]float32, 77*spec.UNet.Context)
	for i := range emb {
		emb[i] = float32(math.Sin(float64(i) * 0.11))
	}
	et, _ := rt.FromFloat32(emb, 1, 77, spec.UNet.Context)
	pooled, _ := rt.FromFloat32(emb[:spec.OpenCLIP.Projection], 1, spec.OpenCLIP.Projection)
	lat, _ := rt.Zeros(gpu.F32, 1, 4, 8, 8)
	params := KSamplerParams{Seed: 5, Steps: 2, CFG: 3, Sampler: "euler", Scheduler: "normal", Denoise: 1, StartStep: -1, LastStep: -1}
	run := func(scale float32) []float32 {
		img := make([]float32, 4*8*8)
		for i := range img {
			img[i] = scale * float32(math.Cos(float64(i)*0.3))
		}
		it, _ := rt.FromFloat32(img, 1, 4, 8, 8)
		c := NewCond(et, pooled)
		c.ConcatLatent = it
		out, err := KSample(context.Background(), ck.Model, Conditioning{c}, Conditioning{c}, &Latent{Samples: lat}, params, nil)
		if err != nil {
			t.Fatal(err)
		}
		v, _ := out.Samples.Float32()
		return v
	}
	a, b := run(1), run(-2)
	var d float64
	for i := range a {
		if math.IsNaN(float64(a[i])) {
			t.Fatal("NaN")
		}
		d = max(d, math.Abs(float64(a[i]-b[i])))
	}
	if d == 0 {
		t.Fatal("the image latent did not reach the UNet")
	}
}
