package sd

import (
	"bufio"
	"context"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/flux"
	"github.com/forgeflow/forgeflow/diffusion/sampling"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights/detect"
)

// TestFluxFillDefaults loads a Flux Fill-shaped model (96 input channels) and an
// image-concat one (32: Flux Canny/Depth) through UNETLoader's path and checks a guider
// step against Flux.apply_model with the c_concat model_base.Flux.concat_cond builds for
// an entry without concat_latent_image and concat_mask, computed here by hand: a zero
// image in the Flux latent format ((0 − 0.1159)·0.3611 everywhere) and, for Fill, 64
// mask channels, all ones without a noise mask and, with the run's noise mask (channels
// 0–7 ones, 8–15 zeros), its channel mean 0.5.
func TestFluxFillDefaults(t *testing.T) {
	rt := newRT(t)
	for _, mc := range []struct {
		name, variant string
		in            int
		mask          bool // the concat carries Fill's 64 mask channels
	}{{"fill", "fill", 16 + 16 + 64, true}, {"image concat", "", 16 + 16, false}} {
		t.Run(mc.name, func(t *testing.T) {
			s := TinyFluxRandomSpec(true).Model
			s.Seed, s.InChannels = 13, mc.in
			path := writeTestFile(t, t.TempDir(), "flux1-"+mc.name+".safetensors", func(w *bufio.Writer) error {
				return flux.WriteRandomSafetensors(w, s, gpu.F32)
			})
			det, err := detect.DetectFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if d := det.Diffusion; d == nil || d.Variant != mc.variant || d.Unsupported != "" {
				t.Fatalf("detected %+v", det.Diffusion)
			}
			ck, err := LoadDiffusionModel(rt, path, DiffusionModelOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer ck.Close()
			checkFluxConcatDefaults(t, rt, ck.Model, mc.in-16, mc.mask)
		})
	}
}

// checkFluxConcatDefaults runs the guider step of TestFluxFillDefaults on m, whose
// concat has extra channels (with the 64 mask channels last when mask).
func checkFluxConcatDefaults(t *testing.T, rt *gpu.Runtime, m *Model, extra int, mask bool) {
	t.Helper()
	fm := m.Net.(FluxNetwork).Model
	if fm.ConcatChannels() != extra || !wantsDenoiseMask(m.Net) {
		t.Fatalf("concat channels %d, want %d", fm.ConcatChannels(), extra)
	}
	const sigma = 0.6
	shape := [4]int{1, 16, 4, 6}
	plane := shape[2] * shape[3]
	x := randValues(1, 16*plane)
	latent := randValues(2, 16*plane)
	noise := randValues(3, 16*plane)
	emb := tensorOf(t, rt, randValues(4, 5*64), 1, 5, 64)
	pooled := tensorOf(t, rt, randValues(5, 32), 1, 32)
	concat := func(maskValue float32) *gpu.Tensor {
		v := make([]float32, 0, extra*plane)
		for range 16 * plane {
			v = append(v, (0-0.1159)*0.3611)
		}
		if mask {
			for range 64 * plane {
				v = append(v, maskValue)
			}
		}
		return tensorOf(t, rt, v, 1, extra, shape[2], shape[3])
	}
	halfMask := make([]float32, 16*plane)
	for i := range 8 * plane {
		halfMask[i] = 1
	}
	for _, c := range []struct {
		name      string
		mask      []float32
		maskValue float32
	}{{"no noise mask", nil, 1}, {"noise mask", halfMask, 0.5}} {
		t.Run(c.name, func(t *testing.T) {
			g := NewBasicGuider(m, Conditioning{NewCond(emb, pooled)})
			p, err := g.prepare(shape[2], shape[3])
			if err != nil {
				t.Fatal(err)
			}
			d := &denoiser{g: g, p: p, shape: shape}
			in := x
			if c.mask != nil {
				d.mask, d.latent, d.noise = c.mask, latent, noise
				// KSamplerX0Inpaint's input: the latent noised to sigma outside the mask.
				scaled := make([]float32, len(x))
				sampling.NoiseScaling(sampling.Flow, sigma, noise, latent, scaled, false)
				in = make([]float32, len(x))
				for i := range x {
					in[i] = x[i]*c.mask[i] + scaled[i]*(1-c.mask[i])
				}
			}
			got, _, err := d.Denoise(context.Background(), x, sigma)
			if err != nil {
				t.Fatal(err)
			}
			wt, err := fm.Denoise(context.Background(), rt, m.Sampling, sigma, flux.Inputs{X: tensorOf(t, rt, in, shape[:]...),
				Context: emb, Y: pooled, Guidance: tensorOf(t, rt, []float32{3.5}, 1), Concat: concat(c.maskValue)})
			if err != nil {
				t.Fatal(err)
			}
			want, _ := wt.Float32()
			if c.mask != nil {
				for i := range want {
					want[i] = want[i]*c.mask[i] + latent[i]*(1-c.mask[i])
				}
			}
			if diff := maxDiff(got, want); diff > 1e-5 {
				t.Errorf("guider prediction differs from Flux.apply_model with concat_cond's defaults by %g", diff)
			}
		})
	}
}

// TestFluxNetworkAttentionMask checks that NetInputs.AttentionMask reaches the Flux
// transformer: the network's output equals Flux.forward with the mask, and differs from
// the output without it.
func TestFluxNetworkAttentionMask(t *testing.T) {
	rt := newRT(t)
	m := loadTinyFlux(t, rt, true)
	fm := m.Net.(FluxNetwork).Model
	const l = 5 + 6 // text tokens + (4/2)·(6/2) image tokens
	bias := randValues(9, l*l)
	for i := range bias {
		bias[i] *= 3
	}
	in := NetInputs{X: tensorOf(t, rt, randValues(1, 16*4*6), 1, 16, 4, 6), Timesteps: tensorOf(t, rt, []float32{0.5}, 1),
		Context: tensorOf(t, rt, randValues(2, 5*64), 1, 5, 64), Y: tensorOf(t, rt, randValues(3, 32), 1, 32),
		Guidance: tensorOf(t, rt, []float32{3.5}, 1), AttentionMask: tensorOf(t, rt, bias, 1, l, l)}
	run := func(out *gpu.Tensor, err error) []float32 {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		v, _ := out.Float32()
		return v
	}
	got := run(m.Net.Forward(context.Background(), rt, in))
	fi := flux.Inputs{X: in.X, Timesteps: in.Timesteps, Context: in.Context, Y: in.Y, Guidance: in.Guidance, AttentionMask: in.AttentionMask}
	if d := maxDiff(got, run(fm.Forward(context.Background(), rt, fi))); d != 0 {
		t.Errorf("network output differs from Flux.forward with the mask by %g", d)
	}
	fi.AttentionMask = nil
	if d := maxDiff(got, run(fm.Forward(context.Background(), rt, fi))); d < 1e-4 {
		t.Errorf("the mask changed the output by %g only", d)
	}
}

// TestFluxFillInpaintConditioning checks that InpaintModelConditioning's
// concat_latent_image and concat_mask reach a Flux Fill: a guider step equals
// Flux.apply_model with the concat FillConcat builds from them (its layout is checked in
// diffusion/flux), for a pixel-sized (N, H, W) mask and without a mask (the run's
// noise mask then stands in, as in concat_cond).
func TestFluxFillInpaintConditioning(t *testing.T) {
	rt := newRT(t)
	s := TinyFluxRandomSpec(true).Model
	s.Seed, s.InChannels = 13, 16+16+64
	path := writeTestFile(t, t.TempDir(), "flux1-fill-dev.safetensors", func(w *bufio.Writer) error {
		return flux.WriteRandomSafetensors(w, s, gpu.F32)
	})
	ck, err := LoadDiffusionModel(rt, path, DiffusionModelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	m := ck.Model
	fm := m.Net.(FluxNetwork).Model
	const sigma = 0.6
	shape := [4]int{1, 16, 4, 6}
	plane := shape[2] * shape[3]
	x := randValues(1, 16*plane)
	emb := tensorOf(t, rt, randValues(4, 5*64), 1, 5, 64)
	pooled := tensorOf(t, rt, randValues(5, 32), 1, 32)
	image := tensorOf(t, rt, randValues(6, 16*plane), 1, 16, 4, 6)
	pix := make([]float32, 32*48)
	for i := range pix {
		if i%48 < 20 {
			pix[i] = 1
		}
	}
	pixMask := tensorOf(t, rt, pix, 1, 32, 48)
	noiseMask := make([]float32, 16*plane)
	for i := range noiseMask {
		noiseMask[i] = float32(i%6) / 5
	}
	for _, c := range []struct {
		name string
		mask *gpu.Tensor // concat_mask
		want *gpu.Tensor // the mask FillConcat gets
	}{{"concat_mask", pixMask, tensorOf(t, rt, pix, 1, 1, 32, 48)}, {"noise mask", nil, tensorOf(t, rt, noiseMask, shape[:]...)}} {
		t.Run(c.name, func(t *testing.T) {
			cond := NewCond(emb, pooled)
			cond.ConcatLatent, cond.ConcatMask = image, c.mask
			g := NewBasicGuider(m, Conditioning{cond})
			p, err := g.prepare(shape[2], shape[3])
			if err != nil {
				t.Fatal(err)
			}
			latent := randValues(2, 16*plane)
			if p.pos, err = withModelExtras(m, Conditioning{cond}, p.pos, shape, latent, noiseMask); err != nil {
				t.Fatal(err)
			}
			// Outside the noise mask the input is the latent noised to sigma.
			noise := randValues(3, 16*plane)
			d := &denoiser{g: g, p: p, shape: shape, mask: noiseMask, latent: latent, noise: noise}
			got, _, err := d.Denoise(context.Background(), x, sigma)
			if err != nil {
				t.Fatal(err)
			}
			scaled := make([]float32, len(x))
			sampling.NoiseScaling(sampling.Flow, sigma, noise, latent, scaled, false)
			in := make([]float32, len(x))
			for i := range x {
				in[i] = x[i]*noiseMask[i] + scaled[i]*(1-noiseMask[i])
			}
			concat, err := fm.FillConcat(rt, 1, shape[2], shape[3], image, c.want)
			if err != nil {
				t.Fatal(err)
			}
			wt, err := fm.Denoise(context.Background(), rt, m.Sampling, sigma, flux.Inputs{X: tensorOf(t, rt, in, shape[:]...),
				Context: emb, Y: pooled, Guidance: tensorOf(t, rt, []float32{3.5}, 1), Concat: concat})
			if err != nil {
				t.Fatal(err)
			}
			want, _ := wt.Float32()
			for i := range want {
				want[i] = want[i]*noiseMask[i] + latent[i]*(1-noiseMask[i])
			}
			if diff := maxDiff(got, want); diff > 1e-5 {
				t.Errorf("guider prediction differs from Flux.apply_model with the entry's concat by %g", diff)
			}
		})
	}
}
