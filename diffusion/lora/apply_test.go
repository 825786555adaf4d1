package lora_test

import (
	"errors"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/lora"
	"github.com/forgeflow/forgeflow/diffusion/lora/loratest"
	"github.com/forgeflow/forgeflow/diffusion/nn"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/internal/dtype"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/detect"
	"github.com/forgeflow/forgeflow/weights/gguf"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

func openLoRA(t *testing.T, rt *gpu.Runtime, f *loratest.File) *lora.File {
	t.Helper()
	data, err := f.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	tf, err := tensorfile.OpenBytes("lora.safetensors", data)
	if err != nil {
		t.Fatal(err)
	}
	lf, err := lora.NewFile(rt, tf)
	if err != nil {
		t.Fatal(err)
	}
	return lf
}

// TestStack applies two LoRAs one after the other (as two chained LoraLoader nodes):
// a weight both patch gets base + s₁Δ₁ + s₂Δ₂, computed from the base; a weight only
// the first patches keeps the first network's merged copy (not recomputed, not copied
// again); WithoutLoRA gives the loaded UNet back.
func TestStack(t *testing.T) {
	tn := loadTiny(t, detect.FamilySD1, weights.F32)
	m1 := "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
	m2 := "lora_unet_down_blocks_0_resnets_0_conv1"
	f1 := loratest.New(1)
	f1.LoRA(m1, loratest.Kohya, 32, 4, 2, 32)
	f1.LoRA(m2, loratest.Kohya, 32, 2, 0, 32, 3, 3)
	f2 := loratest.New(2)
	f2.LoHa(m1, 32, 32, 0, 2, 1)
	l1, l2 := openLoRA(t, tn.rt, f1), openLoRA(t, tn.rt, f2)
	base := tn.snapshot(t, tn.model, tn.clip)

	a, _, err := sd.LoadLoRA(tn.model, nil, l1, 0.5, 0, sd.LoRAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := sd.LoadLoRA(a, nil, l2, 2, 0, sd.LoRAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r1, r2 := ref{f1}, ref{f2}
	f64 := func(v []float32) []float64 {
		out := make([]float64, len(v))
		for i, x := range v {
			out[i] = float64(x)
		}
		return out
	}
	want := plus(plus(f64(base[toQ]), r1.lora(m1+".lora_up.weight", m1+".lora_down.weight", "", m1+".alpha"), 0.5), r2.loha(m1, false), 2)
	near(t, "stacked "+toQ, tn.param(t, b, nil, toQ), want, 2e-5)
	if got := len(b.LoRANetwork().Stack); got != 2 {
		t.Fatalf("stack of %d, want 2", got)
	}
	wa, _ := a.LoRANetwork().Weight(conv1)
	wb, _ := b.LoRANetwork().Weight(conv1)
	if wa != wb {
		t.Fatal("a weight only the first LoRA patches was recomputed for the second")
	}
	if b.WithoutLoRA().UNet != tn.model.UNet || b.WithoutLoRA().LoRANetwork() != nil {
		t.Fatal("WithoutLoRA is not the loaded UNet")
	}
	if a.LoRANetwork().Net == b.LoRANetwork().Net {
		t.Fatal("stacking changed the first network")
	}
	// Zero strength leaves the weights alone; the stack still records the entry.
	z, _, err := sd.LoadLoRA(tn.model, nil, l1, 0, 0, sd.LoRAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if z.UNet != tn.model.UNet {
		t.Fatal("a zero-strength LoRA copied the UNet")
	}
}

// quantize returns w (n, k) as a Q8_0 tensor and its dequantized values.
func quantize(t *testing.T, rt *gpu.Runtime, w []float32, n, k int) (*gpu.Tensor, []float32) {
	t.Helper()
	bs, ts := gguf.TypeQ8_0.BlockSize(), gguf.TypeQ8_0.TypeSize()
	data := make([]byte, len(w)/bs*ts)
	if err := gguf.Quantize(data, gguf.TypeQ8_0, w); err != nil {
		t.Fatal(err)
	}
	q, err := rt.FromBytes(gpu.Q8_0, data, n, k)
	if err != nil {
		t.Fatal(err)
	}
	deq := make([]float32, len(w))
	dtype.DecodeQ8_0(deq, data)
	return q, deq
}

// TestQuantized patches a Q8_0 linear: Auto gives it run-time patches (the quantized
// weight itself is kept), Merge a merged F16 copy; both compute x·(W + sΔ)ᵀ.
func TestQuantized(t *testing.T) {
	tn := loadTiny(t, detect.FamilySD1, weights.F32)
	// A copy of the tiny UNet whose attn1.to_q holds Q8_0 blocks, as a GGUF UNet would.
	qm, err := nn.Clone(tn.model.UNet)
	if err != nil {
		t.Fatal(err)
	}
	lin := &qm.Input[1][1].Transformer.Blocks[0].Attn1.Q
	w, err := lin.Weight.Float32()
	if err != nil {
		t.Fatal(err)
	}
	q, deq := quantize(t, tn.rt, w, 32, 32)
	lin.Weight = q
	model := *tn.model
	model.UNet = qm

	m := "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
	f := loratest.New(3)
	f.LoRA(m, loratest.PEFTDefault, 32, 4, 2, 32)
	lf := openLoRA(t, tn.rt, f)
	d := ref{f}.lora(m+".lora_B.default.weight", m+".lora_A.default.weight", "", m+".alpha")
	want := make([]float64, len(deq))
	for i := range deq {
		want[i] = float64(deq[i]) + 0.75*d[i]
	}
	x := make([]float32, 3*32)
	r := rand.New(rand.NewPCG(4, 5))
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	xt, _ := tn.rt.FromFloat32(x, 3, 32)
	wantY := mm(f64s(x), transpose(want, 32, 32), 3, 32, 32)

	for _, mode := range []lora.Mode{lora.Auto, lora.Merge} {
		p, _, err := sd.LoadLoRA(&model, nil, lf, 0.75, 0, sd.LoRAOptions{Mode: mode})
		if err != nil {
			t.Fatal(err)
		}
		pl := &p.UNet.Input[1][1].Transformer.Blocks[0].Attn1.Q
		switch mode {
		case lora.Auto:
			if pl.Weight != q || len(pl.Patches) != 1 {
				t.Fatalf("auto: weight %s with %d patches; want the Q8_0 weight and one patch", pl.Weight, len(pl.Patches))
			}
		case lora.Merge:
			if pl.Weight.DType() != gpu.F16 || pl.Patches != nil {
				t.Fatalf("merge: weight %s with %d patches; want a merged F16 copy", pl.Weight, len(pl.Patches))
			}
		}
		y, err := pl.Forward(tn.rt, xt)
		if err != nil {
			t.Fatal(err)
		}
		yv, _ := y.Float32()
		tol := 2e-5
		if mode == lora.Merge {
			tol = 2e-3 // F16 rounding of the merged weight
		}
		near(t, mode.String()+" output", f64s(yv), wantY, tol)
		if lin.Weight != q || lin.Patches != nil {
			t.Fatal("the base layer changed")
		}
	}
}

func f64s(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

func transpose(a []float64, rows, cols int) []float64 {
	out := make([]float64, len(a))
	for i := 0; i < rows; i++ {
		for j := 0; j < cols; j++ {
			out[j*rows+i] = a[i*cols+j]
		}
	}
	return out
}

// TestMergedDType merges into F16 and BF16 weights: the copy keeps the weight's dtype,
// holding base + sΔ computed in float32 and rounded once.
func TestMergedDType(t *testing.T) {
	for _, dt := range []weights.DType{weights.F16, weights.BF16} {
		t.Run(string(dt), func(t *testing.T) {
			tn := loadTiny(t, detect.FamilySD1, dt)
			m := "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_ff_net_0_proj"
			f := loratest.New(6).DType(dt)
			f.LoRA(m, loratest.Kohya, 256, 4, 1, 32)
			lf := openLoRA(t, tn.rt, f)
			p, _, err := sd.LoadLoRA(tn.model, nil, lf, 1, 0, sd.LoRAOptions{})
			if err != nil {
				t.Fatal(err)
			}
			w, _ := p.LoRANetwork().Weight(ffProj)
			if string(dt) != w.DType().String() {
				t.Fatalf("merged into %s, want %s", w.DType(), dt)
			}
			// The file's factors as stored (rounded to dt), the product in float32.
			up := rounded(t, f, m+".lora_up.weight", dt)
			down := rounded(t, f, m+".lora_down.weight", dt)
			baseV := tn.param(t, tn.model, nil, ffProj)
			d := mm(up, down, 256, 4, 32)
			want := make([]float32, len(d))
			for i := range d {
				want[i] = float32(baseV[i] + 0.25*d[i])
			}
			enc := make([]byte, 2*len(want))
			dec := make([]float32, len(want))
			if dt == weights.F16 {
				dtype.EncodeF16(enc, want)
				dtype.DecodeF16(dec, enc)
			} else {
				dtype.EncodeBF16(enc, want)
				dtype.DecodeBF16(dec, enc)
			}
			got, _ := w.Float32()
			diff := 0
			for i := range got {
				if got[i] != dec[i] {
					diff++
				}
			}
			// float32 sums in another order may round the other way at a tie.
			if diff > len(got)/100 {
				t.Fatalf("%d of %d merged values differ from base + sΔ rounded to %s", diff, len(got), dt)
			}
		})
	}
}

// rounded returns a tensor as loratest wrote it, rounded to dt.
func rounded(t *testing.T, f *loratest.File, name string, dt weights.DType) []float64 {
	t.Helper()
	v, _ := f.Values(name)
	b := make([]byte, 2*len(v))
	out := make([]float32, len(v))
	if dt == weights.F16 {
		dtype.EncodeF16(b, v)
		dtype.DecodeF16(out, b)
	} else {
		dtype.EncodeBF16(b, v)
		dtype.DecodeBF16(out, b)
	}
	return f64s(out)
}

// TestResolveErrors: files that are not valid adapters, adapters this package does not
// implement, updates whose shape does not fit (skipped and reported, as ComfyUI leaves
// such weights alone), keys nothing uses (reported, not applied).
func TestResolveErrors(t *testing.T) {
	tn := loadTiny(t, detect.FamilySD1, weights.F32)
	km, err := sd.LoRAKeyMap(tn.model, tn.clip)
	if err != nil {
		t.Fatal(err)
	}
	m := "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
	for _, tc := range []struct {
		name  string
		write func(f *loratest.File)
		err   string
	}{
		{"up without down", func(f *loratest.File) { f.Random(m+".lora_up.weight", 1, 32, 4) }, "no matching " + m + ".lora_down.weight"},
		{"LoHa without its second pair", func(f *loratest.File) {
			f.Random(m+".hada_w1_a", 1, 32, 4)
			f.Random(m+".hada_w1_b", 1, 4, 32)
		}, "LoHa lacks its w2a matrix"},
		{"LoKr without w2", func(f *loratest.File) { f.Random(m+".lokr_w1", 1, 4, 4) }, "LoKr needs"},
		{"OFT", func(f *loratest.File) { f.Random(m+".oft_blocks", 1, 4, 8, 8) }, "OFT/BOFT adapters"},
		{"alpha of two values", func(f *loratest.File) {
			f.LoRA(m, loratest.Kohya, 32, 4, 0, 32)
			f.Put(m+".alpha", []float32{1, 2}, 2)
		}, "2 values, want one"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := loratest.New(7)
			tc.write(f)
			_, err := openLoRA(t, tn.rt, f).Resolve(km, nil)
			var fe *lora.FormatError
			var ue *lora.UnsupportedError
			if err == nil || !strings.Contains(err.Error(), tc.err) || !(errors.As(err, &fe) || errors.As(err, &ue)) {
				t.Fatalf("err = %v, want a FormatError or UnsupportedError saying %q", err, tc.err)
			}
		})
	}

	f := loratest.New(8)
	f.LoRA(m, loratest.Kohya, 32, 4, 0, 16) // in 16: the weight is (32, 32)
	f.LoRA("lora_unet_down_blocks_0_resnets_0_conv1", loratest.Kohya, 32, 2, 0, 32, 3, 3)
	f.Random("lora_unet_no_such_layer.lora_up.weight", 1, 4, 2)
	f.Random("something_else", 1, 3)
	lf := openLoRA(t, tn.rt, f)
	set, err := lf.Resolve(km, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"lora_unet_no_such_layer.lora_up.weight", "something_else"}; !slices.Equal(set.Unused, want) {
		t.Fatalf("unused %v, want %v", set.Unused, want)
	}
	for _, mode := range []lora.Mode{lora.Merge, lora.Runtime} {
		p, rep, err := tn.model.WithLoRA(set, 1, mode)
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Skipped) != 1 || !strings.Contains(rep.Skipped[0], toQ) || !slices.Equal(rep.Applied, []string{conv1}) {
			t.Fatalf("%s: applied %v, skipped %v", mode, rep.Applied, rep.Skipped)
		}
		if w, _ := p.LoRANetwork().Weight(toQ); w != tn.model.UNet.Input[1][1].Transformer.Blocks[0].Attn1.Q.Weight {
			t.Fatalf("%s: a weight whose update does not fit changed", mode)
		}
	}

	// A checkpoint given as a LoRA patches nothing.
	ck := loratest.New(9)
	ck.Random("model.diffusion_model.input_blocks.0.0.weight", 1, 32, 4, 3, 3)
	set, err = openLoRA(t, tn.rt, ck).Resolve(km, nil)
	if err != nil || len(set.Patches) != 0 || len(set.Unused) != 1 {
		t.Fatalf("checkpoint as LoRA: %v, %d patches, unused %v", err, len(set.Patches), set.Unused)
	}
}

// TestParseMode reads the mode names.
func TestParseMode(t *testing.T) {
	for s, want := range map[string]lora.Mode{"": lora.Auto, "auto": lora.Auto, "merge": lora.Merge, "runtime": lora.Runtime} {
		if m, err := lora.ParseMode(s); err != nil || m != want {
			t.Errorf("ParseMode(%q) = %v, %v", s, m, err)
		}
	}
	if _, err := lora.ParseMode("fast"); err == nil {
		t.Error("ParseMode accepted an unknown mode")
	}
}

// TestSD3TextEncoders patches the text encoders of an SD3 CLIP (CLIP-L, CLIP-G and T5-XXL
// files through sd.LoadTextEncoders): OneTrainer's lora_te1_ (CLIP-L), lora_te2_ (CLIP-G)
// and lora_te3_ (T5) names; and refuses a LoRA on a model whose network is not an SD UNet.
func TestSD3TextEncoders(t *testing.T) {
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	spec := sd.TinySD3RandomSpec(false)
	spec.DType = weights.F32
	dir := t.TempDir()
	var paths []string
	for _, part := range []string{sd.SD3PartCLIPL, sd.SD3PartCLIPG, sd.SD3PartT5} {
		p := filepath.Join(dir, part+".safetensors")
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := sd.WriteRandomSD3Part(f, spec, part); err != nil {
			t.Fatal(err)
		}
		f.Close()
		paths = append(paths, p)
	}
	ck, err := sd.LoadTextEncoders(rt, paths, "sd3", sd.LoadOptions{FP32TextEncoder: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	c := ck.CLIP
	if c.T5 == nil || len(c.Encoders) != 2 {
		t.Fatalf("SD3 CLIP with %d CLIP encoders and T5 %v", len(c.Encoders), c.T5 != nil)
	}
	q := c.T5.Encoder.Model.Blocks[0].Attn.Q.Weight
	tq := "lora_te3_encoder_block_0_layer_0_SelfAttention_q"
	f := loratest.New(11)
	f.LoRA(tq, loratest.Kohya, q.Dim(0), 2, 1, q.Dim(1))
	f.LoRA("lora_te1_text_model_encoder_layers_0_self_attn_q_proj", loratest.Kohya, spec.CLIPL.Width, 2, 0, spec.CLIPL.Width)
	f.LoRA("lora_te2_text_model_encoder_layers_0_mlp_fc1", loratest.Kohya, 4*spec.CLIPG.Width, 2, 0, spec.CLIPG.Width)
	pos := c.Encoders[0].Encoder.Model.Embeddings.Position
	pe := "text_encoders.clip_l.transformer.text_model.embeddings.position_embedding"
	f.Random(pe+".diff", 0.1, pos.Dim(0), pos.Dim(1)) // a tensor outside the layers
	lf := openLoRA(t, rt, f)
	_, c2, err := sd.LoadLoRA(nil, c, lf, 0, 0.7, sd.LoRAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	key := lora.T5Prefix + "encoder.block.0.layer.0.SelfAttention.q.weight"
	got, err := c2.T5.LoRANetwork().Weight(key)
	if err != nil {
		t.Fatal(err)
	}
	base, _ := q.Float32()
	gv, _ := got.Float32()
	near(t, key, f64s(gv), plus(f64s(base), ref{f}.lora(tq+".lora_up.weight", tq+".lora_down.weight", "", tq+".alpha"), 0.7), 2e-5)
	pkey := lora.CLIPPrefix("l") + "embeddings.position_embedding.weight"
	gp, err := c2.Encoders[0].LoRANetwork().Weight(pkey)
	if err != nil {
		t.Fatal(err)
	}
	bp, _ := pos.Float32()
	gpv, _ := gp.Float32()
	dp, _ := ref{f}.v(pe + ".diff")
	near(t, pkey, f64s(gpv), plus(f64s(bp), dp, 0.7), 1e-6)
	if c.Encoders[0].Encoder.Model.Embeddings.Position != pos {
		t.Fatal("the loaded CLIP-L's position embedding changed")
	}
	for i, name := range []string{"l", "g"} {
		if c2.Encoders[i].Name != name || c2.Encoders[i].LoRANetwork() == nil || c2.Encoders[i].LoRANetwork().Net == c.Encoders[i].Encoder.Model {
			t.Fatalf("CLIP-%s was not patched", name)
		}
	}
	if c.T5.LoRANetwork() != nil || c.T5.Encoder.Model.Blocks[0].Attn.Q.Weight != q {
		t.Fatal("the loaded T5 changed")
	}

	m := &sd.Model{Runtime: rt, Net: sd.MMDiTNetwork{}, Name: "sd3.safetensors"}
	var ue *sd.UnsupportedError
	if _, _, err := sd.LoadLoRA(m, c, lf, 1, 1, sd.LoRAOptions{}); !errors.As(err, &ue) || !strings.Contains(err.Error(), "SD1.x, SD2.x and SDXL UNets") {
		t.Fatalf("LoRA on an MMDiT model: %v", err)
	}
}
