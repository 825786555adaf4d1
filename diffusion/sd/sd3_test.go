package sd

import (
	"bufio"
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/clip"
	"github.com/forgeflow/forgeflow/diffusion/sampling"
	"github.com/forgeflow/forgeflow/diffusion/t5"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/gguf"
)

// sd3Vocabs are a tiny CLIP BPE and the tiny T5 tokenizer, for prompts to tiny models.
func sd3Vocabs(t *testing.T) (*clip.BPE, *t5.Vocab) {
	t.Helper()
	dir := t.TempDir()
	bpe, err := clip.LoadBPE(writeTinyVocab(t, filepath.Join(dir, "clip")))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, t5.TokenizerJSON)
	if err := os.WriteFile(p, TinyT5TokenizerJSON(), 0o644); err != nil {
		t.Fatal(err)
	}
	v, err := t5.LoadVocab(p)
	if err != nil {
		t.Fatal(err)
	}
	return bpe, v
}

func writeSD3(t *testing.T, path string, s RandomSD3Spec, part string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	if part == "" {
		err = WriteRandomSD3(w, s)
	} else {
		err = WriteRandomSD3Part(w, s, part)
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestLoadSD3Checkpoint loads tiny all-in-one SD3 and SD3.5-medium checkpoints (with and
// without T5) as CheckpointLoaderSimple does and runs them end to end: the prompt
// through CLIP-L, CLIP-G and T5, two sampling steps of the MMDiT with discrete flow
// (shift 3), the 16-channel VAE.
func TestLoadSD3Checkpoint(t *testing.T) {
	rt := ckRuntime(t)
	bpe, tv := sd3Vocabs(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		sd35 bool
		noT5 bool
	}{{"sd3", false, false}, {"sd35m", true, false}, {"sd3_no_t5", false, true}} {
		t.Run(tc.name, func(t *testing.T) {
			spec := TinySD3RandomSpec(tc.sd35)
			spec.Seed = 31
			if tc.noT5 {
				spec.T5 = RandomT5{}
			}
			path := filepath.Join(dir, tc.name+".safetensors")
			writeSD3(t, path, spec, "")
			ck, err := LoadCheckpoint(rt, path, LoadOptions{Vocab: bpe, T5Vocab: tv})
			if err != nil {
				t.Fatal(err)
			}
			defer ck.Close()
			m := ck.Model
			net, ok := m.Net.(MMDiTNetwork)
			if !ok || m.UNet != nil {
				t.Fatalf("model network %T, UNet %v", m.Net, m.UNet)
			}
			if c := net.Model.Config; c.QKNormRMS != tc.sd35 || (len(c.XBlockSelfAttn) > 0) != tc.sd35 || c.Hidden != 128 || c.Blocks != 2 {
				t.Errorf("config %+v", c)
			}
			if m.Latent != SD3Latent || !m.PooledY || !m.ExactContext || m.Sampling.Prediction() != sampling.Flow {
				t.Errorf("latent %v pooled y %v exact %v prediction %v", m.Latent, m.PooledY, m.ExactContext, m.Sampling.Prediction())
			}
			// ModelSamplingDiscreteFlow, shift 3: σ(t) = 3t/(1 + 2t), timestep = 1000σ.
			if got, want := m.Sampling.Sigma(500), float32(1.5/2); math.Abs(float64(got-want)) > 1e-6 || m.Sampling.Timestep(0.5) != 500 {
				t.Errorf("sigma(500) = %v, want %v; timestep(0.5) = %v", got, want, m.Sampling.Timestep(0.5))
			}
			if ck.VAE == nil || ck.VAE.Model.LatentChannels() != 16 || ck.VAE.Latent != SD3Latent {
				t.Fatalf("VAE %+v", ck.VAE)
			}
			c := ck.CLIP
			if c.Kind != CLIPSD3 || len(c.Encoders) != 2 || c.Encoders[0].Name != "l" || c.Encoders[1].Name != "g" || (c.T5 == nil) != tc.noT5 {
				t.Fatalf("CLIP kind %v encoders %d T5 %v", c.Kind, len(c.Encoders), c.T5)
			}
			ctx := context.Background()
			pos, err := EncodePrompt(ctx, c, "a (photo:1.2) of a cat")
			if err != nil {
				t.Fatal(err)
			}
			tokens := 77
			if !tc.noT5 {
				tokens += t5.SD3MinLength
			}
			ckShape(t, "cond", pos[0].Embedding, 1, tokens, 4096)
			ckShape(t, "pooled", pos[0].Pooled, 1, 128)
			neg, err := EncodePrompt(ctx, c, "")
			if err != nil {
				t.Fatal(err)
			}
			lat, err := rt.FromFloat32(make([]float32, 16*8*10), 1, 16, 8, 10)
			if err != nil {
				t.Fatal(err)
			}
			out, err := KSample(ctx, m, pos, neg, &Latent{Samples: lat}, KSamplerParams{Seed: 5, Steps: 2, CFG: 4, Sampler: "euler", Scheduler: "simple", Denoise: 1, StartStep: -1, LastStep: -1}, nil)
			if err != nil {
				t.Fatal(err)
			}
			ckShape(t, "samples", out.Samples, 1, 16, 8, 10)
			v, _ := out.Samples.Float32()
			ckFinite(t, "samples", v)
			img, err := ck.VAE.Decode(ctx, out.Samples)
			if err != nil {
				t.Fatal(err)
			}
			if img.Height != 16 || img.Width != 20 {
				t.Errorf("decoded %dx%d", img.Width, img.Height)
			}
		})
	}
}

// TestLoadSD3DiffusionModel loads the MMDiT alone (UNETLoader), as stored, as fp8
// (weight_dtype) and from a GGUF copy, and checks what each gives against the stored
// weights' output.
func TestLoadSD3DiffusionModel(t *testing.T) {
	rt := ckRuntime(t)
	dir := t.TempDir()
	spec := TinySD3RandomSpec(true)
	spec.Seed, spec.DType = 32, weights.F32
	path := filepath.Join(dir, "sd35m.safetensors")
	writeSD3(t, path, spec, SD3PartModel)
	ref, err := LoadDiffusionModel(rt, path, DiffusionModelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	x, _ := rt.FromFloat32(ckRandVals(1, 16*6*6), 1, 16, 6, 6)
	ts, _ := rt.FromFloat32([]float32{700}, 1)
	ctxT, _ := rt.FromFloat32(ckRandVals(2, 5*4096), 1, 5, 4096)
	y, _ := rt.FromFloat32(ckRandVals(3, 128), 1, 128)
	in := NetInputs{X: x, Timesteps: ts, Context: ctxT, Y: y}
	run := func(m *Model) []float32 {
		t.Helper()
		out, err := m.network().Forward(context.Background(), rt, in)
		if err != nil {
			t.Fatal(err)
		}
		v, _ := out.Float32()
		return v
	}
	want := run(ref.Model)
	for _, tc := range []struct {
		dtype string
		wd    gpu.DType
		tol   float64 // relative to the output's largest value
	}{{"default", gpu.F32, 0}, {"fp8_e4m3fn", gpu.F8E4M3FN, 0.1}, {"fp8_e5m2", gpu.F8E5M2, 0.15}} {
		t.Run(tc.dtype, func(t *testing.T) {
			dm, err := LoadDiffusionModel(rt, path, DiffusionModelOptions{WeightDType: tc.dtype})
			if err != nil {
				t.Fatal(err)
			}
			defer dm.Close()
			if dm.CLIP != nil || dm.VAE != nil {
				t.Error("a diffusion model file gave CLIP or VAE")
			}
			net := dm.Model.Net.(MMDiTNetwork).Model
			if got := net.JointBlocks[0].X.Attn.QKV.Weight.DType(); got != tc.wd {
				t.Errorf("weights stored as %v, want %v", got, tc.wd)
			}
			got := run(dm.Model)
			var maxErr, maxRef float64
			for i := range got {
				maxErr = math.Max(maxErr, math.Abs(float64(got[i]-want[i])))
				maxRef = math.Max(maxRef, math.Abs(float64(want[i])))
			}
			if maxErr > tc.tol*maxRef {
				t.Errorf("max |Δ| %.3g against the stored weights (values up to %.3g)", maxErr, maxRef)
			}
			t.Logf("max |Δ| %.3g against the stored weights (values up to %.3g)", maxErr, maxRef)
		})
	}
	var ue *UnsupportedError
	vaePath := filepath.Join(dir, "vae.safetensors")
	writeSD3(t, vaePath, spec, SD3PartVAE)
	if _, err := LoadDiffusionModel(rt, vaePath, DiffusionModelOptions{}); !errors.As(err, &ue) {
		t.Errorf("a VAE as diffusion model: %v, want an UnsupportedError", err)
	}
	if _, err := LoadDiffusionModel(rt, path, DiffusionModelOptions{WeightDType: "int4"}); err == nil {
		t.Error("weight_dtype int4 accepted")
	}
	// A GGUF copy: refused by UNETLoader, loaded (F32 tensors as stored) when asked.
	ggufPath := filepath.Join(dir, "sd35m.gguf")
	writeGGUFCopy(t, path, ggufPath)
	if _, err := LoadDiffusionModel(rt, ggufPath, DiffusionModelOptions{}); !errors.As(err, &ue) {
		t.Errorf("GGUF through UNETLoader: %v, want an UnsupportedError", err)
	}
	gm, err := LoadDiffusionModel(rt, ggufPath, DiffusionModelOptions{GGUF: true})
	if err != nil {
		t.Fatal(err)
	}
	defer gm.Close()
	got := run(gm.Model)
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("GGUF copy differs at %d: %v, want %v", i, got[i], want[i])
		}
	}
}

// writeGGUFCopy writes the tensors of a safetensors file into a GGUF file as F32.
func writeGGUFCopy(t *testing.T, from, to string) {
	t.Helper()
	src, err := openFormats(from, "")
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var ts []gguf.WriteTensor
	for _, info := range src.Tensors() {
		tn, err := src.Tensor(info.Name)
		if err != nil {
			t.Fatal(err)
		}
		v, err := tn.Float32()
		if err != nil {
			t.Fatal(err)
		}
		shape := make([]uint64, len(info.Shape))
		for i, d := range info.Shape {
			shape[len(shape)-1-i] = uint64(d)
		}
		ts = append(ts, gguf.WriteTensor{Name: info.Name, Type: gguf.TypeF32, Dims: shape, Data: f32Bytes(v)})
	}
	f, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := gguf.Write(f, nil, ts); err != nil {
		t.Fatal(err)
	}
}

func f32Bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		u := math.Float32bits(x)
		b[4*i], b[4*i+1], b[4*i+2], b[4*i+3] = byte(u), byte(u>>8), byte(u>>16), byte(u>>24)
	}
	return b
}

// TestSD3Patches runs the post-CFG and cond-batch hooks on a tiny SD3 and checks each
// against its definition (nodes_slg.py, nodes_cfg.py) computed here from plain
// evaluations.
func TestSD3Patches(t *testing.T) {
	rt := ckRuntime(t)
	spec := TinySD3RandomSpec(false)
	spec.Seed = 33
	path := filepath.Join(t.TempDir(), "sd3.safetensors")
	writeSD3(t, path, spec, "")
	ck, err := LoadCheckpoint(rt, path, LoadOptions{SkipCLIP: true, SkipVAE: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	base := ck.Model
	cond := func(seed uint64, tokens int) Conditioning {
		e, _ := rt.FromFloat32(ckRandVals(seed, tokens*4096), 1, tokens, 4096)
		p, _ := rt.FromFloat32(ckRandVals(seed+1, 128), 1, 128)
		return Conditioning{NewCond(e, p)}
	}
	pos, neg := cond(1, 6), cond(3, 6)
	shape := [4]int{1, 16, 6, 6}
	x := ckRandVals(5, 16*36)
	const sigma = 0.6
	ctx := context.Background()
	predict := func(m *Model) []float32 {
		t.Helper()
		g := NewCFGGuider(m, pos, neg, 4)
		p, err := g.prepare(6, 6)
		if err != nil {
			t.Fatal(err)
		}
		d := &denoiser{g: g, p: p, shape: shape}
		den, _, err := d.Denoise(ctx, x, sigma)
		if err != nil {
			t.Fatal(err)
		}
		return den
	}
	evals := func(skip skipLayers) [][]float32 {
		t.Helper()
		g := NewCFGGuider(base, pos, neg, 4)
		p, _ := g.prepare(6, 6)
		d := &denoiser{g: g, p: p, shape: shape}
		outs, err := d.calcCondBatch(ctx, [][]modelCond{p.pos, p.neg}, x, sigma, skip)
		if err != nil {
			t.Fatal(err)
		}
		return outs
	}
	plain, skipped := evals(skipNone), evals(skipLayers{double: []int{1}})
	cfg := cfgCombine(plain[0], plain[1], 4)
	if maxDiff(plain[0], skipped[0]) == 0 {
		t.Fatal("skipping block 1 changed nothing")
	}
	near := func(name string, got, want []float32) {
		t.Helper()
		if d := maxDiff(got, want); d > 1e-5 {
			t.Errorf("%s: max |Δ| %g", name, d)
		}
	}
	near("no patches", predict(base), cfg)

	slg := SkipLayerGuidance{Double: []int{1}, Scale: 3, SigmaStart: 1, SigmaEnd: 0.5}
	want := make([]float32, len(cfg))
	for i := range want {
		want[i] = cfg[i] + (plain[0][i]-skipped[0][i])*3
	}
	near("SkipLayerGuidanceDiT", predict(base.WithPostCFG(slg)), want)
	slg.SigmaStart = 0.55
	near("SkipLayerGuidanceDiT outside its range", predict(base.WithPostCFG(slg)), cfg)
	slg.SigmaStart, slg.Rescale = 1, 0.5
	f := float32(std(plain[0]) / std(want))
	f = 0.5*f + 0.5
	res := make([]float32, len(want))
	for i := range res {
		res[i] = want[i] * f
	}
	near("SkipLayerGuidanceDiT rescaled", predict(base.WithPostCFG(slg)), res)

	simple := SkipLayerGuidanceSimple{Double: []int{1}, SigmaStart: 1, SigmaEnd: 0}
	near("SkipLayerGuidanceDiTSimple", predict(base.WithCondBatch(simple)), cfgCombine(plain[0], skipped[1], 4))

	norm := CFGNorm{Strength: 0.8}
	want = make([]float32, len(cfg))
	hw := 36
	for p := 0; p < hw; p++ {
		var nc, np float64
		for c := 0; c < 16; c++ {
			nc += float64(plain[0][c*hw+p]) * float64(plain[0][c*hw+p])
			np += float64(cfg[c*hw+p]) * float64(cfg[c*hw+p])
		}
		s := math.Min(math.Max(math.Sqrt(nc)/(math.Sqrt(np)+1e-8), 0), 1)
		for c := 0; c < 16; c++ {
			want[c*hw+p] = float32(float64(cfg[c*hw+p]) * s * 0.8)
		}
	}
	near("CFGNorm", predict(base.WithPostCFG(norm)), want)
	// Post-CFG functions apply in the order added.
	both := base.WithPostCFG(slg).WithPostCFG(norm)
	if len(base.PostCFG) != 0 || len(both.PostCFG) != 2 {
		t.Fatalf("patching changed the base model or lost a function: %d, %d", len(base.PostCFG), len(both.PostCFG))
	}
	if got := ParseLayers("7, 8,9 x10;; 011"); len(got) != 5 || got[0] != 7 || got[3] != 10 || got[4] != 11 {
		t.Errorf("ParseLayers: %v", got)
	}
	if got := ParseLayers("none"); len(got) != 0 {
		t.Errorf("ParseLayers(none): %v", got)
	}
}
