package lora_test

import (
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/lora"
	"github.com/forgeflow/forgeflow/diffusion/lora/loratest"
	"github.com/forgeflow/forgeflow/diffusion/nn"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/detect"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// tiny is a tiny SD1 checkpoint (real key layout) loaded through sd.
type tiny struct {
	rt    *gpu.Runtime
	model *sd.Model
	clip  *sd.CLIP
}

func loadTiny(t testing.TB, family detect.Family, dt weights.DType) *tiny {
	t.Helper()
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	spec := sd.TinyRandomSpec(family)
	spec.DType = dt
	path := filepath.Join(t.TempDir(), "tiny.safetensors")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := sd.WriteRandomCheckpoint(f, spec); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	ck, err := sd.LoadCheckpoint(rt, path, sd.LoadOptions{FP32TextEncoder: true, SkipVAE: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ck.Close() })
	return &tiny{rt: rt, model: ck.Model, clip: ck.CLIP}
}

// param reads a weight of a model or CLIP (the first encoder whose network has it) in
// float64: the base's when no LoRA network is given.
func (tn *tiny) param(t *testing.T, m *sd.Model, c *sd.CLIP, key string) []float64 {
	t.Helper()
	var w *gpu.Tensor
	var err error
	if m != nil {
		n := m.LoRANetwork()
		if n == nil {
			n = lora.NewNetwork(m.UNet, lora.UNetPrefix, lora.Auto)
		}
		w, err = n.Weight(key)
	}
	if w == nil && c != nil {
		for _, te := range c.Encoders {
			n := te.LoRANetwork()
			if n == nil {
				n = lora.NewNetwork(te.Encoder.Model, lora.CLIPPrefix(te.Name), lora.Auto)
			}
			if w, err = n.Weight(key); err == nil {
				break
			}
		}
	}
	if w == nil {
		t.Fatalf("no parameter %s: %v", key, err)
	}
	v, err := w.Float32()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

// ref computes expected weights in float64 from the values loratest wrote.
type ref struct {
	f *loratest.File
}

func (r ref) v(name string) ([]float64, []int) {
	v, s := r.f.Values(name)
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out, s
}

// mm is a (m×k) · b (k×n).
func mm(a, b []float64, m, k, n int) []float64 {
	c := make([]float64, m*n)
	for i := 0; i < m; i++ {
		for p := 0; p < k; p++ {
			for j := 0; j < n; j++ {
				c[i*n+j] += a[i*k+p] * b[p*n+j]
			}
		}
	}
	return c
}

func numel(s []int) int {
	n := 1
	for _, d := range s {
		n *= d
	}
	return n
}

// lora is up·down (with a Tucker mid: up·(mid ∘ down)) times alpha/rank.
func (r ref) lora(up, down, mid, alpha string) []float64 {
	u, us := r.v(up)
	d, ds := r.v(down)
	rank := ds[0]
	in := numel(ds[1:])
	if mid != "" {
		m, ms := r.v(mid)
		kk := ms[2] * ms[3]
		nd := make([]float64, ms[0]*in*kk)
		for a := 0; a < ms[0]; a++ {
			for i := 0; i < in; i++ {
				for b := 0; b < rank; b++ {
					for k := 0; k < kk; k++ {
						nd[(a*in+i)*kk+k] += d[b*in+i] * m[(a*rank+b)*kk+k]
					}
				}
			}
		}
		d, in = nd, in*kk
	}
	out := mm(u, d, us[0], rank, in)
	return scaled(out, r.alpha(alpha, rank))
}

func (r ref) alpha(name string, rank int) float64 {
	if name == "" {
		return 1
	}
	a, _ := r.v(name)
	if len(a) == 0 {
		return 1 // no alpha in the file
	}
	return a[0] / float64(rank)
}

func scaled(v []float64, s float64) []float64 {
	for i := range v {
		v[i] *= s
	}
	return v
}

// tucker is Σ_ij t[i,j,k,l]·wb[j,r]·wa[i,p] → (p, r, k, l).
func (r ref) tucker(t, wb, wa string) []float64 {
	tv, ts := r.v(t)
	b, bs := r.v(wb)
	a, as := r.v(wa)
	kk := ts[2] * ts[3]
	out := make([]float64, as[1]*bs[1]*kk)
	for i := 0; i < ts[0]; i++ {
		for j := 0; j < ts[1]; j++ {
			for p := 0; p < as[1]; p++ {
				for q := 0; q < bs[1]; q++ {
					for k := 0; k < kk; k++ {
						out[(p*bs[1]+q)*kk+k] += tv[(i*ts[1]+j)*kk+k] * b[j*bs[1]+q] * a[i*as[1]+p]
					}
				}
			}
		}
	}
	return out
}

func (r ref) loha(m string, tuckerCores bool) []float64 {
	factor := func(n string) []float64 {
		if tuckerCores {
			return r.tucker(m+".hada_t"+n, m+".hada_w"+n+"_b", m+".hada_w"+n+"_a")
		}
		a, as := r.v(m + ".hada_w" + n + "_a")
		b, bs := r.v(m + ".hada_w" + n + "_b")
		return mm(a, b, as[0], as[1], bs[1])
	}
	f1, f2 := factor("1"), factor("2")
	_, bs := r.v(m + ".hada_w1_b")
	for i := range f1 {
		f1[i] *= f2[i]
	}
	return scaled(f1, r.alpha(m+".alpha", bs[0]))
}

// kron is w1 (a, b) ⊗ w2 (c, d[, kh, kw]).
func kron(w1 []float64, a, b int, w2 []float64, c, d, kk int) []float64 {
	out := make([]float64, a*c*b*d*kk)
	for i1 := 0; i1 < a; i1++ {
		for j1 := 0; j1 < b; j1++ {
			for i2 := 0; i2 < c; i2++ {
				for j2 := 0; j2 < d; j2++ {
					for k := 0; k < kk; k++ {
						out[((i1*c+i2)*b*d+j1*d+j2)*kk+k] = w1[i1*b+j1] * w2[(i2*d+j2)*kk+k]
					}
				}
			}
		}
	}
	return out
}

// plus returns base + s·d.
func plus(base, d []float64, s float64) []float64 {
	out := make([]float64, len(base))
	for i := range base {
		out[i] = base[i] + s*d[i]
	}
	return out
}

// dora is weight_decompose: wc = w + d; norms per output row of w (byOut) or per input
// channel of wc; wc·dora/(norm+eps); w + strength·(wc − w).
func dora(w, d []float64, shape []int, mag []float64, byOut bool, strength float64) []float64 {
	out, inner := shape[0], len(w)/shape[0]
	kk := numel(shape[2:])
	in := inner / kk
	wc := plus(w, d, 1)
	const eps = 1.1920928955078125e-07
	res := make([]float64, len(w))
	for o := 0; o < out; o++ {
		for i := 0; i < in; i++ {
			var ss float64
			if byOut {
				for j := 0; j < inner; j++ {
					ss += w[o*inner+j] * w[o*inner+j]
				}
			} else {
				for p := 0; p < out; p++ {
					for k := 0; k < kk; k++ {
						ss += wc[(p*in+i)*kk+k] * wc[(p*in+i)*kk+k]
					}
				}
			}
			m := mag[i]
			if byOut {
				m = mag[o]
			}
			for k := 0; k < kk; k++ {
				j := (o*in+i)*kk + k
				res[j] = w[j] + strength*(wc[j]*m/(math.Sqrt(ss)+eps)-w[j])
			}
		}
	}
	return res
}

const (
	toQ     = "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
	toK2    = "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
	toV2    = "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_v.weight"
	toOut   = "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_out.0.weight"
	ffProj  = "diffusion_model.input_blocks.1.1.transformer_blocks.0.ff.net.0.proj.weight"
	ffOut   = "diffusion_model.input_blocks.1.1.transformer_blocks.0.ff.net.2"
	projIn  = "diffusion_model.input_blocks.1.1.proj_in.weight"
	conv1   = "diffusion_model.input_blocks.1.0.in_layers.2.weight"
	midConv = "diffusion_model.middle_block.0.out_layers.3.weight"
	outConv = "diffusion_model.output_blocks.0.0.in_layers.2.weight"
	l1Conv  = "diffusion_model.input_blocks.3.0.in_layers.2.weight"
	norm    = "diffusion_model.input_blocks.1.1.norm"
	outNorm = "diffusion_model.out.0.weight"
	l1ToK   = "diffusion_model.input_blocks.3.1.transformer_blocks.0.attn1.to_k.weight"
	teQ0    = "clip_l.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"
	teV1    = "clip_l.transformer.text_model.encoder.layers.1.self_attn.v_proj.weight"
	teFC1   = "clip_l.transformer.text_model.encoder.layers.1.mlp.fc1.weight"
	teFC2   = "clip_l.transformer.text_model.encoder.layers.1.mlp.fc2.weight"
)

// formatCase is one LoRA file: how it is written, the strengths, and the expected
// patched weights computed from the base weights (base) and the file's values (r).
type formatCase struct {
	name   string
	write  func(f *loratest.File)
	sm, sc float64
	want   func(base func(string) []float64, r ref) map[string][]float64
}

var formatCases = []formatCase{
	{"kohya diffusers names, alpha", func(f *loratest.File) {
		f.LoRA("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", loratest.Kohya, 32, 4, 2, 32)
	}, 0.7, 1, func(base func(string) []float64, r ref) map[string][]float64 {
		m := "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
		return map[string][]float64{toQ: plus(base(toQ), r.lora(m+".lora_up.weight", m+".lora_down.weight", "", m+".alpha"), 0.7)}
	}},
	{"kohya ldm names, no alpha", func(f *loratest.File) {
		f.LoRA("lora_unet_input_blocks_1_1_transformer_blocks_0_attn2_to_k", loratest.Kohya, 32, 3, 0, 64)
	}, -1.5, 1, func(base func(string) []float64, r ref) map[string][]float64 {
		m := "lora_unet_input_blocks_1_1_transformer_blocks_0_attn2_to_k"
		return map[string][]float64{toK2: plus(base(toK2), r.lora(m+".lora_up.weight", m+".lora_down.weight", "", ""), -1.5)}
	}},
	{"PEFT lora_A/lora_B with alpha, and to_out.0", func(f *loratest.File) {
		f.LoRA("unet.down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj", loratest.PEFT, 256, 4, 8, 32)
		f.LoRA("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0", loratest.PEFT, 32, 2, 0, 32)
	}, 1, 1, func(base func(string) []float64, r ref) map[string][]float64 {
		a, b := "unet.down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj", "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0"
		return map[string][]float64{
			ffProj: plus(base(ffProj), r.lora(a+".lora_B.weight", a+".lora_A.weight", "", a+".alpha"), 1),
			toOut:  plus(base(toOut), r.lora(b+".lora_B.weight", b+".lora_A.weight", "", ""), 1),
		}
	}},
	{"diffusers attention processors", func(f *loratest.File) {
		f.LoRA("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.to_v", loratest.DiffusersOld, 32, 2, 0, 64)
		f.LoRA("down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_out", loratest.Transformers, 32, 2, 0, 32)
	}, 0.5, 1, func(base func(string) []float64, r ref) map[string][]float64 {
		a, b := "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.to_v", "down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_out"
		return map[string][]float64{
			toV2:  plus(base(toV2), r.lora(a+"_lora.up.weight", a+"_lora.down.weight", "", ""), 0.5),
			toOut: plus(base(toOut), r.lora(b+".lora_linear_layer.up.weight", b+".lora_linear_layer.down.weight", "", ""), 0.5),
		}
	}},
	{"1×1 conv proj_in and LoCon 3×3", func(f *loratest.File) {
		f.LoRA("lora_unet_down_blocks_0_attentions_0_proj_in", loratest.Kohya, 32, 4, 4, 32, 1, 1)
		f.LoRA("lycoris_down_blocks_0_resnets_0_conv1", loratest.Kohya, 32, 4, 1, 32, 3, 3)
	}, 0.9, 1, func(base func(string) []float64, r ref) map[string][]float64 {
		a, b := "lora_unet_down_blocks_0_attentions_0_proj_in", "lycoris_down_blocks_0_resnets_0_conv1"
		return map[string][]float64{
			projIn: plus(base(projIn), r.lora(a+".lora_up.weight", a+".lora_down.weight", "", a+".alpha"), 0.9),
			conv1:  plus(base(conv1), r.lora(b+".lora_up.weight", b+".lora_down.weight", "", b+".alpha"), 0.9),
		}
	}},
	{"LoCon with a Tucker mid", func(f *loratest.File) {
		f.LoConTucker("lora_unet_mid_block_resnets_0_conv2", 64, 64, 3, 4, 2)
	}, 1, 1, func(base func(string) []float64, r ref) map[string][]float64 {
		m := "lora_unet_mid_block_resnets_0_conv2"
		return map[string][]float64{midConv: plus(base(midConv), r.lora(m+".lora_up.weight", m+".lora_down.weight", m+".lora_mid.weight", m+".alpha"), 1)}
	}},
	{"LoHa linear (text encoder) and Tucker conv", func(f *loratest.File) {
		f.LoHa("lora_te_text_model_encoder_layers_0_self_attn_q_proj", 64, 64, 0, 4, 2)
		f.LoHa("lora_unet_output_blocks_0_0_in_layers_2", 64, 128, 3, 4, 0)
	}, 0.8, 0.6, func(base func(string) []float64, r ref) map[string][]float64 {
		return map[string][]float64{
			teQ0:    plus(base(teQ0), r.loha("lora_te_text_model_encoder_layers_0_self_attn_q_proj", false), 0.6),
			outConv: plus(base(outConv), r.loha("lora_unet_output_blocks_0_0_in_layers_2", true), 0.8),
		}
	}},
	{"LoKr: w1 with a low-rank w2; low-rank w1 with a Tucker w2", func(f *loratest.File) {
		f.LoKr("lora_te1_text_model_encoder_layers_1_mlp_fc1", loratest.LoKr{A: 4, B: 8, C: 64, D: 8, Rank2: 4, Alpha: 3})
		f.LoKr("lora_unet_input_blocks_3_0_in_layers_2", loratest.LoKr{A: 4, B: 2, C: 16, D: 16, Rank1: 2, Rank2: 3, K: 3, Alpha: 1.5})
	}, 1.2, 0.7, func(base func(string) []float64, r ref) map[string][]float64 {
		a, b := "lora_te1_text_model_encoder_layers_1_mlp_fc1", "lora_unet_input_blocks_3_0_in_layers_2"
		w1a, _ := r.v(a + ".lokr_w1")
		w2a, _ := r.v(a + ".lokr_w2_a")
		w2b, _ := r.v(a + ".lokr_w2_b")
		da := scaled(kron(w1a, 4, 8, mm(w2a, w2b, 64, 4, 8), 64, 8, 1), r.alpha(a+".alpha", 4))
		p, _ := r.v(b + ".lokr_w1_a")
		q, _ := r.v(b + ".lokr_w1_b")
		db := scaled(kron(mm(p, q, 4, 2, 2), 4, 2, r.tucker(b+".lokr_t2", b+".lokr_w2_b", b+".lokr_w2_a"), 16, 16, 9), r.alpha(b+".alpha", 3))
		return map[string][]float64{teFC1: plus(base(teFC1), da, 0.7), l1Conv: plus(base(l1Conv), db, 1.2)}
	}},
	{"full diffs: weight and bias, w_norm/b_norm, set_weight, text_encoders names", func(f *loratest.File) {
		f.Random(ffOut+".diff", 0.1, 32, 128)
		f.Random(ffOut+".diff_b", 0.1, 32)
		f.Random(norm+".w_norm", 0.1, 32)
		f.Random(norm+".b_norm", 0.1, 32)
		f.Random("diffusion_model.out.0.set_weight", 1, 32)
		f.Random("text_encoders.clip_l.transformer.text_model.encoder.layers.1.mlp.fc2.diff", 0.1, 64, 256)
	}, 0.5, 2, func(base func(string) []float64, r ref) map[string][]float64 {
		v := func(n string) []float64 { x, _ := r.v(n); return x }
		return map[string][]float64{
			ffOut + ".weight": plus(base(ffOut+".weight"), v(ffOut+".diff"), 0.5),
			ffOut + ".bias":   plus(base(ffOut+".bias"), v(ffOut+".diff_b"), 0.5),
			norm + ".weight":  plus(base(norm+".weight"), v(norm+".w_norm"), 0.5),
			norm + ".bias":    plus(base(norm+".bias"), v(norm+".b_norm"), 0.5),
			outNorm:           v("diffusion_model.out.0.set_weight"),
			teFC2:             plus(base(teFC2), v("text_encoders.clip_l.transformer.text_model.encoder.layers.1.mlp.fc2.diff"), 2),
		}
	}},
	{"DoRA on the output axis and on the input axis", func(f *loratest.File) {
		f.LoRA("lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_k", loratest.Kohya, 64, 4, 2, 64)
		f.Random("lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_k.dora_scale", 1, 64, 1)
		f.LoRA("lora_te_text_model_encoder_layers_1_self_attn_v_proj", loratest.Kohya, 64, 4, 0, 64)
		f.Random("lora_te_text_model_encoder_layers_1_self_attn_v_proj.dora_scale", 1, 1, 64)
	}, 0.8, 1, func(base func(string) []float64, r ref) map[string][]float64 {
		a, b := "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_k", "lora_te_text_model_encoder_layers_1_self_attn_v_proj"
		ma, _ := r.v(a + ".dora_scale")
		mb, _ := r.v(b + ".dora_scale")
		return map[string][]float64{
			l1ToK: dora(base(l1ToK), r.lora(a+".lora_up.weight", a+".lora_down.weight", "", a+".alpha"), []int{64, 64}, ma, true, 0.8),
			teV1:  dora(base(teV1), r.lora(b+".lora_up.weight", b+".lora_down.weight", "", ""), []int{64, 64}, mb, false, 1),
		}
	}},
}

// TestFormats writes a LoRA file of each kind for a tiny SD1 checkpoint, applies it as
// LoraLoader does in merge mode and in run-time mode, and checks every patched weight
// against a float64 evaluation of the adapter's formula (the run-time patches through
// the sum of their Up·Down); nothing else may change.
func TestFormats(t *testing.T) {
	tn := loadTiny(t, detect.FamilySD1, weights.F32)
	for i, c := range formatCases {
		t.Run(c.name, func(t *testing.T) {
			f := loratest.New(uint64(100 + i))
			c.write(f)
			data, err := f.Bytes()
			if err != nil {
				t.Fatal(err)
			}
			tf, err := tensorfile.OpenBytes("case.safetensors", data)
			if err != nil {
				t.Fatal(err)
			}
			lf, err := lora.NewFile(tn.rt, tf)
			if err != nil {
				t.Fatal(err)
			}
			base := func(key string) []float64 { return tn.param(t, tn.model, tn.clip, key) }
			want := c.want(base, ref{f})
			before := tn.snapshot(t, tn.model, tn.clip)
			for _, mode := range []lora.Mode{lora.Merge, lora.Runtime} {
				m2, c2, err := sd.LoadLoRA(tn.model, tn.clip, lf, c.sm, c.sc, sd.LoRAOptions{Mode: mode})
				if err != nil {
					t.Fatal(err)
				}
				for key, w := range want {
					got := tn.param(t, m2, c2, key)
					if mode == lora.Runtime {
						got = withPatches(t, m2, c2, key, got)
					}
					near(t, mode.String()+" "+key, got, w, 2e-5)
				}
				after := tn.snapshot(t, m2, c2)
				if len(after) != len(before) {
					t.Fatalf("%s: %d parameters, the base has %d", mode, len(after), len(before))
				}
				for key, v := range before {
					if _, patched := want[key]; !patched && !slices.Equal(after[key], v) {
						t.Fatalf("%s: %s changed", mode, key)
					}
				}
			}
			for key, v := range tn.snapshot(t, tn.model, tn.clip) {
				if !slices.Equal(before[key], v) {
					t.Fatalf("the base model's %s changed", key)
				}
			}
		})
	}
}

// snapshot reads every parameter of a model and CLIP (their LoRA networks' where they
// have one) in ComfyUI's naming.
func (tn *tiny) snapshot(t *testing.T, m *sd.Model, c *sd.CLIP) map[string][]float32 {
	t.Helper()
	out := map[string][]float32{}
	add := func(ts map[string]*gpu.Tensor, err error) {
		if err != nil {
			t.Fatal(err)
		}
		for k, w := range ts {
			v, err := w.Float32()
			if err != nil {
				t.Fatal(err)
			}
			out[k] = v
		}
	}
	n := m.LoRANetwork()
	if n == nil {
		n = lora.NewNetwork(m.UNet, lora.UNetPrefix, lora.Auto)
	}
	add(n.Tensors())
	for _, te := range c.Encoders {
		n := te.LoRANetwork()
		if n == nil {
			n = lora.NewNetwork(te.Encoder.Model, lora.CLIPPrefix(te.Name), lora.Auto)
		}
		add(n.Tensors())
	}
	return out
}

// withPatches adds the run-time patches of key's layer (Σ Up·Down) to its weight.
func withPatches(t *testing.T, m *sd.Model, c *sd.CLIP, key string, w []float64) []float64 {
	t.Helper()
	var ps []patchT
	if n := m.LoRANetwork(); n != nil {
		if p, err := n.Patches(key); err == nil {
			ps = append(ps, toPatchT(t, p)...)
		}
	}
	for _, te := range c.Encoders {
		if n := te.LoRANetwork(); n != nil {
			if p, err := n.Patches(key); err == nil {
				ps = append(ps, toPatchT(t, p)...)
			}
		}
	}
	out := slices.Clone(w)
	for _, p := range ps {
		d := mm(p.up, p.down, p.out, p.r, p.in)
		for i := range out {
			out[i] += d[i]
		}
	}
	return out
}

type patchT struct {
	up, down   []float64
	out, r, in int
}

func toPatchT(t *testing.T, ps []nn.Patch) []patchT {
	t.Helper()
	var out []patchT
	for _, p := range ps {
		u, err := p.Up.Float32()
		if err != nil {
			t.Fatal(err)
		}
		d, err := p.Down.Float32()
		if err != nil {
			t.Fatal(err)
		}
		pt := patchT{out: p.Up.Dim(0), r: p.Down.Dim(0)}
		pt.in = len(d) / pt.r
		for _, x := range u {
			pt.up = append(pt.up, float64(x))
		}
		for _, x := range d {
			pt.down = append(pt.down, float64(x))
		}
		out = append(out, pt)
	}
	return out
}

// near fails t unless |got − want| ≤ tol·(1 + |want|) everywhere.
func near(t *testing.T, name string, got, want []float64, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", name, len(got), len(want))
	}
	for i := range want {
		if d := math.Abs(got[i] - want[i]); d > tol*(1+math.Abs(want[i])) || math.IsNaN(got[i]) {
			t.Fatalf("%s[%d] = %v, want %v", name, i, got[i], want[i])
		}
	}
}
