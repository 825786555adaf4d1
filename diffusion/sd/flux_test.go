package sd

import (
	"bufio"
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/flux"
	"github.com/forgeflow/forgeflow/diffusion/sampling"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights/gguf"
)

// writeTestFile writes a model file with write and returns its path.
func writeTestFile(t *testing.T, dir, name string, write func(w *bufio.Writer) error) string {
	t.Helper()
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	if err := write(w); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

// tinyFluxFile writes flux.TinyRandomSpec (context 64, vector 32) as F32 safetensors.
func tinyFluxFile(t *testing.T, guidance bool) string {
	t.Helper()
	s := TinyFluxRandomSpec(guidance).Model
	s.Seed = 11
	return writeTestFile(t, t.TempDir(), "flux.safetensors", func(w *bufio.Writer) error {
		return flux.WriteRandomSafetensors(w, s, gpu.F32)
	})
}

func loadTinyFlux(t *testing.T, rt *gpu.Runtime, guidance bool) *Model {
	t.Helper()
	ck, err := LoadDiffusionModel(rt, tinyFluxFile(t, guidance), DiffusionModelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ck.Close() })
	return ck.Model
}

func randValues(seed uint64, n int) []float32 {
	r := rand.New(rand.NewPCG(seed, 1))
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return v
}

// TestLoadFluxDiffusionModel loads Flux files as UNETLoader and UnetLoaderGGUF do and
// checks the MODEL ComfyUI builds: the network, the default model sampling of dev and
// schnell, the latent format and the conditioning the model takes.
func TestLoadFluxDiffusionModel(t *testing.T) {
	rt := newRT(t)
	for _, dev := range []bool{true, false} {
		m := loadTinyFlux(t, rt, dev)
		net, ok := m.Net.(FluxNetwork)
		if !ok || net.Model.Guidance() != dev {
			t.Fatalf("dev=%v: network %T", dev, m.Net)
		}
		want := sampling.ModelSampling(sampling.NewFlowShift(1, 1, 1000))
		if dev {
			want = sampling.NewFlux(1.15)
		}
		if !slices.Equal(m.Sampling.Sigmas(), want.Sigmas()) || m.Sampling.Prediction() != sampling.Flow {
			t.Errorf("dev=%v: model sampling %T is not ComfyUI's default", dev, m.Sampling)
		}
		if m.Latent != FluxLatent || !m.PooledY || !m.Guidance || !m.ExactContext || !m.References || m.ADM || m.UNet != nil {
			t.Errorf("dev=%v: model %+v", dev, m)
		}
	}

	dir := t.TempDir()
	s := TinyFluxRandomSpec(true).Model
	q8 := writeTestFile(t, dir, "flux-Q8_0.gguf", func(w *bufio.Writer) error { return flux.WriteRandomGGUF(w, s, gguf.TypeQ8_0) })
	if _, err := LoadDiffusionModel(rt, q8, DiffusionModelOptions{}); err == nil || !strings.Contains(err.Error(), "UnetLoaderGGUF") {
		t.Errorf("UNETLoader on a GGUF file: err = %v", err)
	}
	ck, err := LoadDiffusionModel(rt, q8, DiffusionModelOptions{GGUF: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	if w := ck.Model.Net.(FluxNetwork).Model.DoubleBlocks[0].ImgAttn.QKV.Weight; w.DType() != gpu.Q8_0 {
		t.Errorf("GGUF weight stored as %s, want Q8_0", w.DType())
	}
	fp8, err := LoadDiffusionModel(rt, tinyFluxFile(t, true), DiffusionModelOptions{WeightDType: "fp8_e4m3fn"})
	if err != nil {
		t.Fatal(err)
	}
	defer fp8.Close()
	if w := fp8.Model.Net.(FluxNetwork).Model.DoubleBlocks[0].ImgAttn.QKV.Weight; w.DType() != gpu.F8E4M3FN {
		t.Errorf("fp8_e4m3fn weight stored as %s", w.DType())
	}
}

// TestFluxGuiderPrediction checks that a BasicGuider step on a Flux model is
// model_base.Flux.apply_model with the conditioning's extra conds: the T5 context, the
// pooled output as y, guidance 3.5 unless FluxGuidance set another or
// FluxDisableGuidance removed it, and the reference latents through process_latent_in
// with their placement method.
func TestFluxGuiderPrediction(t *testing.T) {
	rt := newRT(t)
	m := loadTinyFlux(t, rt, true)
	fm := m.Net.(FluxNetwork).Model
	const sigma = 0.8
	shape := [4]int{1, 16, 4, 6}
	x := randValues(1, 16*4*6)
	emb := tensorOf(t, rt, randValues(2, 5*64), 1, 5, 64)
	pooled := tensorOf(t, rt, randValues(3, 32), 1, 32)
	ref1 := randValues(4, 16*4*4)
	ref2 := randValues(5, 16*2*6)
	inModel := func(v []float32) []float32 {
		out := make([]float32, len(v))
		for i := range v {
			out[i] = (v[i] - 0.1159) * 0.3611
		}
		return out
	}
	seven := 7.0
	for _, c := range []struct {
		name     string
		cond     func(*Cond)
		guidance []float32 // nil: none
		refs     [][]float32
		refShape [][]int
		method   string
	}{
		{name: "default guidance", cond: func(*Cond) {}, guidance: []float32{3.5}},
		{name: "FluxGuidance", cond: func(c *Cond) { c.Guidance = &seven }, guidance: []float32{7}},
		{name: "FluxDisableGuidance", cond: func(c *Cond) { c.Guidance, c.NoGuidance = &seven, true }},
		{name: "references", cond: func(c *Cond) {
			c.ReferenceLatents = []*gpu.Tensor{tensorOf(t, rt, ref1, 1, 16, 4, 4), tensorOf(t, rt, ref2, 1, 16, 2, 6)}
			c.ReferenceMethod = "index"
		}, guidance: []float32{3.5}, refs: [][]float32{inModel(ref1), inModel(ref2)}, refShape: [][]int{{1, 16, 4, 4}, {1, 16, 2, 6}}, method: "index"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cond := NewCond(emb, pooled)
			c.cond(&cond)
			g := NewBasicGuider(m, Conditioning{cond})
			p, err := g.prepare(shape[2], shape[3])
			if err != nil {
				t.Fatal(err)
			}
			d := &denoiser{g: g, p: p, shape: shape}
			got, _, err := d.Denoise(context.Background(), x, sigma)
			if err != nil {
				t.Fatal(err)
			}
			in := flux.Inputs{X: tensorOf(t, rt, x, shape[:]...), Context: emb, Y: pooled, RefMethod: c.method}
			if c.guidance != nil {
				in.Guidance = tensorOf(t, rt, c.guidance, 1)
			}
			for i, r := range c.refs {
				in.RefLatents = append(in.RefLatents, tensorOf(t, rt, r, c.refShape[i]...))
			}
			wt, err := fm.Denoise(context.Background(), rt, m.Sampling, sigma, in)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := wt.Float32()
			if diff := maxDiff(got, want); diff > 1e-5 {
				t.Errorf("guider prediction differs from Flux.apply_model by %g", diff)
			}
		})
	}
	// A run with disabled guidance differs from one with it: the value reaches the model.
	a, b := NewCond(emb, pooled), NewCond(emb, pooled)
	b.NoGuidance = true
	pa, _ := NewBasicGuider(m, Conditioning{a}).prepare(4, 6)
	pb, _ := NewBasicGuider(m, Conditioning{b}).prepare(4, 6)
	if !pa.pos[0].hasGuidance || pb.pos[0].hasGuidance {
		t.Errorf("guidance flags %v %v", pa.pos[0].hasGuidance, pb.pos[0].hasGuidance)
	}
}

// TestFluxCondBatching checks calc_cond_batch's grouping for Flux's conds: the cond and
// uncond go through the network together only when their contexts have the same token
// count (CONDRegular), their guidance is present on both and their reference latents
// match in number and shapes; a BasicGuider makes one batch of one.
func TestFluxCondBatching(t *testing.T) {
	rt := newRT(t)
	m := &Model{Runtime: rt, Sampling: sampling.NewFlux(1.15), Latent: FluxLatent,
		PooledY: true, Guidance: true, ExactContext: true, References: true}
	emb := func(tokens int) *gpu.Tensor {
		return tensorOf(t, rt, randValues(uint64(tokens), tokens*8), 1, tokens, 8)
	}
	pooled := tensorOf(t, rt, randValues(9, 4), 1, 4)
	ref := func(h int) []*gpu.Tensor { return []*gpu.Tensor{tensorOf(t, rt, make([]float32, 16*h*2), 1, 16, h, 2)} }
	type call struct {
		batch      int
		guidance   []float32
		refs       int
		refBatch   int
		hasPooledY bool
	}
	run := func(g *Guider) []call {
		var calls []call
		g.forward = func(ctx context.Context, in NetInputs) (*gpu.Tensor, error) {
			c := call{batch: in.X.Dim(0), refs: len(in.RefLatents), hasPooledY: in.Y != nil}
			if in.Guidance != nil {
				c.guidance, _ = in.Guidance.Float32()
			}
			if len(in.RefLatents) > 0 {
				c.refBatch = in.RefLatents[0].Dim(0)
			}
			calls = append(calls, c)
			return rt.Zeros(gpu.F32, in.X.Shape()...)
		}
		shape := [4]int{1, 16, 4, 4}
		p, err := g.prepare(4, 4)
		if err != nil {
			t.Fatal(err)
		}
		d := &denoiser{g: g, p: p, shape: shape}
		if _, _, err := d.Denoise(context.Background(), make([]float32, 16*16), 0.5); err != nil {
			t.Fatal(err)
		}
		return calls
	}
	g5 := 5.0
	pos := NewCond(emb(6), pooled)
	pos.Guidance = &g5
	neg := NewCond(emb(6), pooled)
	if got := run(NewCFGGuider(m, Conditioning{pos}, Conditioning{neg}, 4)); len(got) != 1 || got[0].batch != 2 ||
		!slices.Equal(got[0].guidance, []float32{3.5, 5}) || !got[0].hasPooledY {
		t.Errorf("equal token counts: calls %+v, want one batch of 2 (uncond first: guidance 3.5, 5)", got)
	}
	if got := run(NewCFGGuider(m, Conditioning{pos}, Conditioning{NewCond(emb(3), pooled)}, 4)); len(got) != 2 {
		t.Errorf("6 and 3 tokens: calls %+v, want two (Flux contexts are not padded by repetition)", got)
	}
	off := neg
	off.NoGuidance = true
	if got := run(NewCFGGuider(m, Conditioning{pos}, Conditioning{off}, 4)); len(got) != 2 || got[0].guidance != nil && got[1].guidance != nil {
		t.Errorf("guidance on one entry only: calls %+v, want two, one without guidance", got)
	}
	withRef := pos
	withRef.ReferenceLatents = ref(4)
	negRef := neg
	negRef.ReferenceLatents = ref(4)
	if got := run(NewCFGGuider(m, Conditioning{withRef}, Conditioning{negRef}, 4)); len(got) != 1 || got[0].refs != 1 || got[0].refBatch != 2 {
		t.Errorf("equal references: calls %+v, want one batch of 2 with a reference batch of 2", got)
	}
	negRef.ReferenceLatents = ref(2)
	if got := run(NewCFGGuider(m, Conditioning{withRef}, Conditioning{negRef}, 4)); len(got) != 2 {
		t.Errorf("references of different shapes: calls %+v, want two", got)
	}
	if got := run(NewCFGGuider(m, Conditioning{withRef}, Conditioning{neg}, 4)); len(got) != 2 {
		t.Errorf("references on one entry only: calls %+v, want two", got)
	}
	if got := run(NewBasicGuider(m, Conditioning{withRef})); len(got) != 1 || got[0].batch != 1 {
		t.Errorf("BasicGuider: calls %+v, want one batch of 1 (no uncond)", got)
	}
	if got := run(NewCFGGuider(m, Conditioning{pos}, Conditioning{neg}, 1)); len(got) != 1 || got[0].batch != 1 {
		t.Errorf("cfg 1: calls %+v, want the cond alone", got)
	}

	// A model that takes no references ignores them, as ComfyUI's SD models do.
	sdm := *m
	sdm.References = false
	if got := run(NewCFGGuider(&sdm, Conditioning{withRef}, Conditioning{neg}, 4)); len(got) != 1 || got[0].refs != 0 {
		t.Errorf("model without references: calls %+v", got)
	}
	bad := pos
	bad.ReferenceLatents = []*gpu.Tensor{tensorOf(t, rt, make([]float32, 4*16), 1, 4, 4, 4)}
	if _, err := NewBasicGuider(m, Conditioning{bad}).prepare(4, 4); err == nil || !strings.Contains(err.Error(), "4 channels") {
		t.Errorf("a 4-channel reference for a 16-channel model: err = %v", err)
	}
}

// TestFluxSample runs a whole sampling run (RandomNoise, BasicGuider, euler over
// BasicScheduler's simple sigmas) on a tiny Flux and checks it against the same euler
// steps taken by hand with Flux.apply_model: the flow noise scaling, the latent format
// on the way in and out, and the guider between.
func TestFluxSample(t *testing.T) {
	rt := newRT(t)
	m := loadTinyFlux(t, rt, true)
	fm := m.Net.(FluxNetwork).Model
	emb := tensorOf(t, rt, randValues(2, 5*64), 1, 5, 64)
	pooled := tensorOf(t, rt, randValues(3, 32), 1, 32)
	shape := [4]int{1, 16, 4, 4}
	lat := &Latent{Samples: tensorOf(t, rt, make([]float32, 16*16), shape[:]...)}
	sched, err := sampling.LookupScheduler("simple")
	if err != nil {
		t.Fatal(err)
	}
	sigmas := sched(m.Sampling, 3)
	out, _, err := CustomSample(context.Background(), Noise{Seed: 42}, NewBasicGuider(m, Conditioning{NewCond(emb, pooled)}),
		smp(t, "euler"), sigmas, lat, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := values(t, out)

	noise, err := Noise{Seed: 42}.Generate(shape[:], nil)
	if err != nil {
		t.Fatal(err)
	}
	// CONST noise scaling of an empty latent: σ₀·noise + (1 − σ₀)·0.
	x := make([]float32, len(noise))
	for j := range x {
		x[j] = sigmas[0] * noise[j]
	}
	for i := 0; i+1 < len(sigmas); i++ {
		s, next := sigmas[i], sigmas[i+1]
		dt, err := fm.Denoise(context.Background(), rt, m.Sampling, s, flux.Inputs{X: tensorOf(t, rt, x, shape[:]...), Context: emb, Y: pooled,
			Guidance: tensorOf(t, rt, []float32{3.5}, 1)})
		if err != nil {
			t.Fatal(err)
		}
		den, _ := dt.Float32()
		for j := range x {
			d := (x[j] - den[j]) / s
			x[j] += d * (next - s)
		}
	}
	for j := range x {
		x[j] = x[j]/0.3611 + 0.1159
	}
	if diff := maxDiff(got, x); diff > 1e-4 || math.IsNaN(diff) {
		t.Errorf("sampled latent differs from hand-run euler by %g", diff)
	}
}

// TestLoadFluxCheckpoint loads a Flux all-in-one checkpoint (flux1-schnell-fp8's
// layout) as CheckpointLoaderSimple does: the transformer, the VAE under vae. and
// Flux's CLIP (CLIP-L and T5-XXL).
func TestLoadFluxCheckpoint(t *testing.T) {
	rt := newRT(t)
	dir := t.TempDir()
	s := TinyFluxRandomSpec(false)
	s.Seed = 5
	p := writeTestFile(t, dir, "flux1-schnell-tiny.safetensors", func(w *bufio.Writer) error { return WriteRandomFlux(w, s) })
	ck, err := LoadCheckpoint(rt, p, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	if _, ok := ck.Model.Net.(FluxNetwork); !ok || ck.Model.Latent != FluxLatent {
		t.Fatalf("model %+v", ck.Model)
	}
	if ck.VAE == nil || ck.VAE.Latent != FluxLatent || ck.VAE.Model == nil {
		t.Errorf("VAE %+v", ck.VAE)
	}
	if ck.CLIP == nil || ck.CLIP.Kind != CLIPFlux || ck.CLIP.T5 == nil || len(ck.CLIP.Encoders) != 1 {
		t.Fatalf("CLIP %+v", ck.CLIP)
	}

	noT5 := s
	noT5.T5 = RandomT5{}
	p = writeTestFile(t, dir, "flux-no-t5.safetensors", func(w *bufio.Writer) error { return WriteRandomFlux(w, noT5) })
	if _, err := LoadCheckpoint(rt, p, LoadOptions{}); err == nil || !strings.Contains(err.Error(), "T5-XXL") {
		t.Errorf("checkpoint with CLIP-L only: err = %v", err)
	}
	var fe *FormatError
	if _, err := LoadCheckpoint(rt, p, LoadOptions{}); !errors.As(err, &fe) {
		t.Errorf("checkpoint with CLIP-L only: %T, want *FormatError", err)
	}
	bare := s
	bare.VAE, bare.CLIPL, bare.T5 = RandomVAE{}, RandomText{}, RandomT5{}
	p = writeTestFile(t, dir, "flux-bare.safetensors", func(w *bufio.Writer) error { return WriteRandomFlux(w, bare) })
	ck2, err := LoadCheckpoint(rt, p, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ck2.Close()
	if ck2.Model == nil || ck2.VAE != nil || ck2.CLIP != nil {
		t.Errorf("transformer-only checkpoint: model %v, VAE %v, CLIP %v", ck2.Model != nil, ck2.VAE, ck2.CLIP)
	}
}

// TestRandomT5GGUF writes a T5 encoder in llama.cpp's t5encoder layout (Q8_0) and in
// the transformers layout (F32) from one spec and checks that the GGUF binds through
// the GGUF text encoder loader with its blocks kept as stored and encodes like the F32
// file within Q8_0's precision.
func TestRandomT5GGUF(t *testing.T) {
	rt := newRT(t)
	dir := t.TempDir()
	spec := TinyFluxRandomSpec(true)
	spec.Seed = 3
	gg := writeTestFile(t, dir, "t5-Q8_0.gguf", func(w *bufio.Writer) error { return WriteRandomT5GGUF(w, spec.T5, spec.Seed, gguf.TypeQ8_0) })
	st := writeTestFile(t, dir, "t5.safetensors", func(w *bufio.Writer) error {
		p := spec.TextParts()
		p.DType = "F32"
		return WriteRandomSD3Part(w, p, SD3PartT5)
	})
	cl := writeTestFile(t, dir, "clip_l.safetensors", func(w *bufio.Writer) error { return WriteRandomSD3Part(w, spec.TextParts(), SD3PartCLIPL) })
	encode := func(path string) ([]float32, gpu.DType) {
		ck, err := LoadTextEncoders(rt, []string{cl, path}, "flux", LoadOptions{GGUF: true, FP32TextEncoder: true})
		if err != nil {
			t.Fatal(err)
		}
		defer ck.Close()
		m := ck.CLIP.T5.Encoder.Model
		out, err := m.Encode(context.Background(), [][]int{{5, 9, 30, 1}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		v, _ := out.Float32()
		return v, m.Blocks[0].FF.Gate.Weight.DType()
	}
	want, wd := encode(st)
	got, gd := encode(gg)
	if wd != gpu.F32 || gd != gpu.Q8_0 {
		t.Fatalf("weights stored as %s and %s, want F32 and Q8_0", wd, gd)
	}
	var num, den float64
	for i := range want {
		d := float64(got[i] - want[i])
		num += d * d
		den += float64(want[i]) * float64(want[i])
	}
	if rel := math.Sqrt(num / den); rel > 0.02 || math.IsNaN(rel) {
		t.Errorf("Q8_0 T5 differs from the F32 one by %.3g (relative)", rel)
	}
}
