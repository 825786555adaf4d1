package sd

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/sampling"
	"github.com/forgeflow/forgeflow/diffusion/unet"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

// The inpainting cases of tools/refpeer/controlnet_ref.py: ComfyUI's KSampler on a tiny
// SD1.5-layout UNet with 9 input channels (concat from InpaintModelConditioning's
// conditioning, from the latent and its noise mask as VAEEncodeForInpaint leaves it,
// or the blank image without a mask) and DifferentialDiffusion on the 4-channel and
// 9-channel UNets. The UNets are written here with the spec and seeds of
// diffusion/controlnet's reference models; the fixture records their sha256.

// inpaintRefUNet is the reference UNet spec (diffusion/controlnet refUNet).
var inpaintRefUNet = RandomUNet{ModelChannels: 32, Mult: []int{1, 2, 4, 4}, ResBlocks: 2, Depth: []int{0, 1, 0, 0}, MidDepth: 1, Context: 32}

func writeInpaintRefUNet(t *testing.T, dir, file string, in int, seed uint64) string {
	t.Helper()
	u := inpaintRefUNet
	u.InChannels = in
	p := filepath.Join(dir, file)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if err := WriteRandomTensors(io.MultiWriter(f, h), RandomUNetTensors(unetPrefix, u), seed, weights.F16); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func TestInpaintAgainstComfyUI(t *testing.T) {
	if testing.Short() {
		t.Skip("writes two 13 MB UNets and samples 5 runs")
	}
	fx, err := safetensors.Open("testdata/inpaint_refpeer.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	defer fx.Close()
	var sums map[string]string
	if err := json.Unmarshal([]byte(fx.Metadata()["models"]), &sums); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, m := range []struct {
		file string
		in   int
		seed uint64
	}{{"unet.safetensors", 4, 11}, {"unet_inpaint.safetensors", 9, 12}} {
		if sum := writeInpaintRefUNet(t, dir, m.file, m.in, m.seed); sum != sums[m.file] {
			t.Fatalf("%s: sha256 %s, the reference used %s", m.file, sum, sums[m.file])
		}
	}
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	load := func(file string) *Model {
		ck, err := LoadCheckpoint(rt, filepath.Join(dir, file), LoadOptions{UNetHeads: unet.Heads{Dim: 64}, SkipCLIP: true, SkipVAE: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ck.Close() })
		return ck.Model
	}
	plain, inpaint := load("unet.safetensors"), load("unet_inpaint.safetensors")
	if plain.isInpaintModel() || !inpaint.isInpaintModel() {
		t.Fatalf("inpainting model detection: plain %v, 9-channel %v", plain.isInpaintModel(), inpaint.isInpaintModel())
	}
	tensor := func(name string, shape ...int) *gpu.Tensor {
		tn, err := fx.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		v, err := tn.Float32()
		if err != nil {
			t.Fatal(err)
		}
		if shape == nil {
			for _, d := range tn.Shape {
				shape = append(shape, int(d))
			}
		}
		g, err := rt.FromFloat32(v, shape...)
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	posT, negT := tensor("in.pos"), tensor("in.neg")
	latent, concat := tensor("in.latent"), tensor("in.concat_latent")
	mask := tensor("in.mask", 1, 1, 64, 64)
	mv, _ := mask.Float32()
	rounded := make([]float32, len(mv))
	for i, v := range mv {
		rounded[i] = float32(math.RoundToEven(float64(v)))
	}
	roundMask, _ := rt.FromFloat32(rounded, 1, 1, 64, 64)
	zeros, _ := rt.Zeros(gpu.F32, 1, 4, 8, 8)
	conds := func(withConcat bool) (Conditioning, Conditioning) {
		p, n := NewCond(posT, nil), NewCond(negT, nil)
		if withConcat {
			p.ConcatLatent, p.ConcatMask = concat, mask
			n.ConcatLatent, n.ConcatMask = concat, mask
		}
		return Conditioning{p}, Conditioning{n}
	}
	params := KSamplerParams{Seed: 7, Steps: 4, CFG: 4, Sampler: "euler", Scheduler: "normal", Denoise: 1, StartStep: -1, LastStep: -1}
	for _, tc := range []struct {
		name     string
		model    *Model
		concat   bool
		samples  *gpu.Tensor
		mask     *gpu.Tensor
		strength float64 // DifferentialDiffusion; 0 for none
	}{
		{"concat", inpaint, true, latent, mask, 0},
		{"vae_mask", inpaint, false, latent, roundMask, 0},
		{"txt2img", inpaint, false, zeros, nil, 0},
		{"soft", plain, false, latent, mask, 1},
		{"soft_half_concat", inpaint, true, latent, mask, 0.5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := tc.model
			if tc.strength > 0 {
				m = m.WithDenoiseMask(DifferentialDiffusion(tc.strength))
			}
			pos, neg := conds(tc.concat)
			out, err := KSample(context.Background(), m, pos, neg, &Latent{Samples: tc.samples, NoiseMask: tc.mask}, params, nil)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := out.Samples.Float32()
			wt, err := fx.Tensor("out." + tc.name)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := wt.Float32()
			var maxd, maxw, sig, noise float64
			for i := range want {
				d := math.Abs(float64(got[i] - want[i]))
				maxd, maxw = max(maxd, d), max(maxw, math.Abs(float64(want[i])))
				sig += float64(want[i]) * float64(want[i])
				noise += d * d
			}
			t.Logf("max |Δ| %.3g (max |want| %.3g), PSNR %.1f dB, SNR %.1f dB", maxd, maxw,
				20*math.Log10(maxw/math.Sqrt(max(noise, 1e-300)/float64(len(want)))), 10*math.Log10(sig/max(noise, 1e-300)))
			if maxd > 2e-4*(1+maxw) {
				t.Errorf("max |Δ| %.3g", maxd)
			}
		})
	}
}

// BenchmarkDifferentialDiffusion is the per-step cost soft inpainting adds: the
// threshold mask of a 512² image's latent (4×64×64), batch 1.
func BenchmarkDifferentialDiffusion(b *testing.B) {
	m := &Model{Sampling: sampling.NewSD(sampling.EPS)}
	mask := make([]float32, 4*64*64)
	for i := range mask {
		mask[i] = float32(i%4096) / 4096
	}
	sigmas := []float32{14.6, 7, 3, 1, 0}
	f := DifferentialDiffusion(1)
	b.SetBytes(int64(4 * len(mask)))
	for i := 0; i < b.N; i++ {
		f(m, 3, sigmas, mask)
	}
}
