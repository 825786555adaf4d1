package t5

import (
	"context"
	"errors"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"github.com/forgeflow/forgeflow/diffusion/clip"
	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/gguf"
	"github.com/forgeflow/forgeflow/weights/safetensors"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

var tinySize = synthSize{DModel: 32, DKV: 8, Heads: 4, DFF: 64, Layers: 3, Vocab: 64, Buckets: 32}

// tinyInputs are a batch of two token rows (ending in </s> then padding) and the mask
// T5XXLModel would build for them.
var (
	tinyIDs  = [][]int{{5, 17, 33, 2, 9, 1, 0, 0, 0, 0, 0, 0}, {63, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}}
	tinyMask = [][]int{{1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0}, {1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}}
)

func newRuntime(t testing.TB) *gpu.Runtime {
	t.Helper()
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return rt
}

// encodeBoth runs ids without and with the mask.
func encodeBoth(t *testing.T, m *Model) (plain, masked []float32) {
	t.Helper()
	for i, mask := range [][][]int{nil, tinyMask} {
		out, err := m.Encode(context.Background(), tinyIDs, mask)
		if err != nil {
			t.Fatal(err)
		}
		if want := []int{len(tinyIDs), len(tinyIDs[0]), m.DModel}; !equalInts(out.Shape(), want) {
			t.Fatalf("output shape %v, want %v", out.Shape(), want)
		}
		v, err := out.Float32()
		out.Release()
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			plain = v
		} else {
			masked = v
		}
	}
	return plain, masked
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func closeTo(t *testing.T, name string, got, want []float32, abs, rel float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", name, len(got), len(want))
	}
	for i := range want {
		d := math.Abs(float64(got[i]) - float64(want[i]))
		if !(d <= abs+rel*math.Abs(float64(want[i]))) {
			t.Fatalf("%s[%d] = %v, want %v", name, i, got[i], want[i])
		}
	}
}

// reference loads held (float32 values) from memory under the transformers names.
func reference(t *testing.T, rt *gpu.Runtime, held []synthTensor) *Model {
	t.Helper()
	m, _, err := Load(rt, newMapSource(rt, held), "")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestLoadLayouts loads one synthetic encoder from the file layouts users have — a
// t5xxl safetensors in F32/F16/BF16/F8, the same inside an SD3 checkpoint's prefix, and
// llama.cpp-named GGUFs with quantized matrices — and checks each against the same
// values held in float32. Quantized weights must stay quantized, mapped from the file.
func TestLoadLayouts(t *testing.T) {
	rt := newRuntime(t)
	ts := synthT5(tinySize, 1)
	type layout struct {
		name   string
		write  func(path string) []synthTensor
		prefix string
		stored gpu.DType // dtype the q projections must keep
		tol    float64
	}
	sfLayout := func(name, prefix string, d weights.DType, stored gpu.DType, tol float64) layout {
		return layout{name, func(p string) []synthTensor { return writeSafetensors(t, p, prefix, ts, d) }, prefix, stored, tol}
	}
	ggLayout := func(name string, q gguf.Type, stored gpu.DType, tol float64) layout {
		return layout{name, func(p string) []synthTensor { return writeGGUF(t, p, ts, q) }, "", stored, tol}
	}
	layouts := []layout{
		sfLayout("safetensors-f32", "", weights.F32, gpu.F32, 1e-5),
		sfLayout("safetensors-f16-sd3-prefix", "text_encoders.t5xxl.transformer.", weights.F16, gpu.F16, 1e-4),
		sfLayout("safetensors-bf16", "", weights.BF16, gpu.BF16, 1e-4),
		sfLayout("safetensors-fp8-e4m3fn", "", weights.F8_E4M3, gpu.F8E4M3FN, 1e-4),
		sfLayout("safetensors-fp8-e5m2", "", weights.F8_E5M2, gpu.F8E5M2, 1e-4),
		ggLayout("gguf-f16", gguf.TypeF16, gpu.F16, 1e-4),
		ggLayout("gguf-q8_0", gguf.TypeQ8_0, gpu.Q8_0, 1e-4),
		ggLayout("gguf-q4_0", gguf.TypeQ4_0, gpu.Q4_0, 1e-4),
		ggLayout("gguf-q5_1", gguf.TypeQ5_1, gpu.Q5_1, 1e-4),
	}
	for _, l := range layouts {
		t.Run(l.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "t5")
			held := l.write(path)
			var src statedict.Source
			var stored func(key string) []byte
			if strings.HasPrefix(l.name, "gguf") {
				f, err := tensorfile.Open(path)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				src = statedict.NewFileSource(rt, f)
				stored = func(key string) []byte {
					tn, err := f.Tensor(key)
					if err != nil {
						t.Fatal(err)
					}
					return tn.Data
				}
			} else {
				f, err := tensorfile.Open(path)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				src = statedict.NewFileSource(rt, f)
				stored = func(key string) []byte {
					tn, err := f.Tensor(l.prefix + key)
					if err != nil {
						t.Fatal(err)
					}
					return tn.Data
				}
			}
			m, rep, err := Load(rt, src, l.prefix)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Release()
			if len(rep.Unused) > 0 {
				t.Errorf("unused keys %v", rep.Unused)
			}
			if got := (Config{DModel: 32, DFF: 64, Heads: 4, DKV: 8, Layers: 3, Vocab: 64, NumBuckets: 32, MaxDistance: 128, Eps: 1e-6}); m.Config != got {
				t.Errorf("config %+v, want %+v", m.Config, got)
			}
			// Weights used as stored: the same dtype, and the bytes of the file itself.
			for _, w := range []struct {
				name string
				t    *gpu.Tensor
			}{
				{"q", m.Blocks[1].Attn.Q.Weight},
				{"wo", m.Blocks[2].FF.Down.Weight},
				{"shared", m.Shared},
			} {
				if w.t.DType() != l.stored {
					t.Errorf("%s kept as %s, want the stored %s", w.name, w.t.DType(), l.stored)
				}
			}
			key := "encoder.block.1.layer.0.SelfAttention.q.weight"
			if strings.HasPrefix(l.name, "gguf") {
				key = "enc.blk.1.attn_q.weight"
			}
			if host := m.Blocks[1].Attn.Q.Weight.Buffer().Host; len(host) == 0 || unsafe.SliceData(host) != unsafe.SliceData(stored(key)) {
				t.Errorf("q weight is a copy, not the file's bytes")
			}

			ref := reference(t, rt, held)
			defer ref.Release()
			gotPlain, gotMasked := encodeBoth(t, m)
			wantPlain, wantMasked := encodeBoth(t, ref)
			closeTo(t, "unmasked", gotPlain, wantPlain, l.tol, l.tol)
			closeTo(t, "masked", gotMasked, wantMasked, l.tol, l.tol)
		})
	}
}

// TestMaskChangesOnlyWhatItShould: with the mask, a row's visible tokens do not depend on
// what the hidden positions hold; without it they do (Flux's T5 lets padding attend).
func TestMaskChangesOnlyWhatItShould(t *testing.T) {
	rt := newRuntime(t)
	m := reference(t, rt, synthT5(tinySize, 2))
	defer m.Release()
	other := [][]int{append([]int(nil), tinyIDs[0]...)}
	for i := 6; i < len(other[0]); i++ {
		other[0][i] = 40 + i // change only the positions the mask hides
	}
	run := func(ids, mask [][]int) []float32 {
		out, err := m.Encode(context.Background(), ids, mask)
		if err != nil {
			t.Fatal(err)
		}
		defer out.Release()
		v, err := out.Float32()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	visible := 6 * m.DModel
	a := run(tinyIDs[:1], tinyMask[:1])
	b := run(other, tinyMask[:1])
	closeTo(t, "masked visible tokens", b[:visible], a[:visible], 1e-6, 1e-6)
	a = run(tinyIDs[:1], nil)
	b = run(other, nil)
	same := true
	for i := 0; i < visible; i++ {
		if a[i] != b[i] {
			same = false
		}
	}
	if same {
		t.Error("without a mask the visible tokens ignore the padding; T5 attends to all positions")
	}
}

// TestPerBlockBias: an encoder whose every block carries block 0's bias table (UMT5's
// layout) computes what one with the table in block 0 only computes.
func TestPerBlockBias(t *testing.T) {
	rt := newRuntime(t)
	shared := synthT5(tinySize, 3)
	var bias synthTensor
	for _, st := range shared {
		if strings.HasSuffix(st.HF, "relative_attention_bias.weight") {
			bias = st
		}
	}
	var per []synthTensor
	for _, st := range shared {
		per = append(per, st)
		for i := 1; i < tinySize.Layers; i++ {
			if st.HF == "encoder.block."+string(rune('0'+i))+".layer.0.layer_norm.weight" {
				per = append(per, synthTensor{HF: strings.Replace(bias.HF, "block.0", "block."+string(rune('0'+i)), 1), Shape: bias.Shape, Values: bias.Values})
			}
		}
	}
	a := reference(t, rt, shared)
	defer a.Release()
	b := reference(t, rt, per)
	defer b.Release()
	if b.Blocks[2].Attn.RelativeBias == nil {
		t.Fatal("block 2's own table not bound")
	}
	ap, am := encodeBoth(t, a)
	bp, bm := encodeBoth(t, b)
	closeTo(t, "unmasked", bp, ap, 0, 0)
	closeTo(t, "masked", bm, am, 0, 0)
}

// TestScaledFP8 loads a t5xxl_fp8_e4m3fn_scaled-style file: fp8 matrices with a
// scale_weight scalar each and the scaled_fp8 marker, which ComfyUI multiplies back.
func TestScaledFP8(t *testing.T) {
	rt := newRuntime(t)
	ts := synthT5(tinySize, 4)
	var extra []safetensors.Entry
	scaled := make([]synthTensor, len(ts))
	copy(scaled, ts)
	for i, st := range ts {
		if len(st.Shape) != 2 || st.HF == "shared.weight" || strings.Contains(st.HF, "relative_attention_bias") {
			continue
		}
		s := float32(0.25 + 0.125*float64(i%5))
		v := make([]float32, len(st.Values))
		for j, x := range st.Values {
			v[j] = x / s
		}
		scaled[i].Values = v
		raw := make([]byte, 4)
		if err := gpu.EncodeFloat32(gpu.F32, raw, []float32{s}); err != nil {
			t.Fatal(err)
		}
		extra = append(extra, safetensors.Entry{Name: strings.TrimSuffix(st.HF, "weight") + "scale_weight", DType: weights.F32, Shape: []int64{}, Data: raw})
	}
	extra = append(extra, safetensors.Entry{Name: "scaled_fp8", DType: weights.F8_E4M3, Shape: []int64{0}, Data: []byte{}})
	path := filepath.Join(t.TempDir(), "t5_scaled.safetensors")
	held := writeSafetensors(t, path, "", scaled, weights.F8_E4M3, extra...)
	f, err := tensorfile.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, rep, err := Load(rt, statedict.NewFileSource(rt, f), "")
	if err != nil {
		t.Fatal(err)
	}
	defer m.Release()
	if len(rep.Unused) != 1 || rep.Unused[0] != "scaled_fp8" {
		t.Errorf("unused %v, want only the scaled_fp8 marker", rep.Unused)
	}
	// The reference holds the products weight·scale in float32.
	want := make([]synthTensor, len(held))
	copy(want, held)
	for i, st := range held {
		if st.Values == nil || len(st.Shape) != 2 || st.HF == "shared.weight" || strings.Contains(st.HF, "relative_attention_bias") {
			continue
		}
		s := float32(0.25 + 0.125*float64(i%5))
		v := make([]float32, len(st.Values))
		for j, x := range st.Values {
			v[j] = x * s
		}
		want[i].Values = v
	}
	ref := reference(t, rt, want)
	defer ref.Release()
	gp, gm := encodeBoth(t, m)
	wp, wm := encodeBoth(t, ref)
	closeTo(t, "unmasked", gp, wp, 1e-4, 1e-4)
	closeTo(t, "masked", gm, wm, 1e-4, 1e-4)
}

// TestLoadErrors: broken or foreign files are refused with an error naming what is wrong.
func TestLoadErrors(t *testing.T) {
	rt := newRuntime(t)
	base := synthT5(tinySize, 5)
	edit := func(f func([]synthTensor) []synthTensor) []synthTensor {
		c := make([]synthTensor, len(base))
		copy(c, base)
		return f(c)
	}
	drop := func(key string) []synthTensor {
		return edit(func(ts []synthTensor) []synthTensor {
			var out []synthTensor
			for _, st := range ts {
				if st.HF != key {
					out = append(out, st)
				}
			}
			return out
		})
	}
	rename := func(from, to string) []synthTensor {
		return edit(func(ts []synthTensor) []synthTensor {
			for i := range ts {
				ts[i].HF = strings.Replace(ts[i].HF, from, to, 1)
			}
			return ts
		})
	}
	reshape := func(key string, shape []int) []synthTensor {
		return edit(func(ts []synthTensor) []synthTensor {
			for i := range ts {
				if ts[i].HF == key {
					ts[i].Shape = shape
				}
			}
			return ts
		})
	}
	cases := []struct {
		name string
		ts   []synthTensor
		want string
	}{
		{"missing-k", drop("encoder.block.1.layer.0.SelfAttention.k.weight"), "encoder.block.1.layer.0.SelfAttention.k.weight"},
		{"no-embedding", drop("shared.weight"), "no token embedding"},
		{"no-bias", drop("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"), "relative_attention_bias"},
		{"relu-feed-forward", rename("DenseReluDense.wi_0", "DenseReluDense.wi"), "relu feed-forward"},
		{"not-t5", rename("encoder.block.", "encoder.layers."), "no encoder.block.0"},
		{"wrong-wo", reshape("encoder.block.2.layer.1.DenseReluDense.wo.weight", []int{64, 32}), "encoder.block.2.layer.1.DenseReluDense.wo.weight has shape [64 32], want [32 64]"},
		{"wrong-norm", reshape("encoder.final_layer_norm.weight", []int{16}), "encoder.final_layer_norm.weight"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for i := range c.ts {
				if len(c.ts[i].Values) != prod(c.ts[i].Shape) {
					v := make([]float32, prod(c.ts[i].Shape))
					copy(v, c.ts[i].Values)
					c.ts[i].Values = v
				}
			}
			m, _, err := Load(rt, newMapSource(rt, c.ts), "")
			if err == nil {
				m.Release()
				t.Fatal("loaded")
			}
			if !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "t5: ") {
				t.Fatalf("error %q, want one starting with t5: and naming %q", err, c.want)
			}
		})
	}
}

func prod(s []int) int {
	n := 1
	for _, v := range s {
		n *= v
	}
	return n
}

// TestForwardErrors: bad inputs fail cleanly; a cancelled context stops the encoder.
func TestForwardErrors(t *testing.T) {
	rt := newRuntime(t)
	m := reference(t, rt, synthT5(tinySize, 6))
	defer m.Release()
	ctx := context.Background()
	cases := []struct {
		name string
		ids  [][]int
		mask [][]int
		want string
	}{
		{"id-past-vocab", [][]int{{1, 64}}, nil, "outside the vocabulary"},
		{"negative-id", [][]int{{-1}}, nil, "outside the vocabulary"},
		{"ragged", [][]int{{1, 2}, {1}}, nil, "row 1 has 1"},
		{"mask-rows", [][]int{{1, 2}}, [][]int{{1, 1}, {1, 1}}, "2 mask rows"},
		{"mask-width", [][]int{{1, 2}}, [][]int{{1}}, "mask row 0"},
		{"empty", nil, nil, "no tokens"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, err := m.Encode(ctx, c.ids, c.mask)
			if err == nil {
				out.Release()
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q, want %q", err, c.want)
			}
		})
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := m.Encode(cctx, tinyIDs, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled encode: %v", err)
	}
	if _, err := m.Forward(ctx, mustEmbed(t, m, tinyIDs), Params{Intermediate: 3}); err == nil || !strings.Contains(err.Error(), "block 3") {
		t.Fatalf("intermediate past the last block: %v", err)
	}
}

func mustEmbed(t *testing.T, m *Model, ids [][]int) *gpu.Tensor {
	t.Helper()
	x, err := m.Embed(ids)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(x.Release)
	return x
}

// TestEncoderWeights: prompt weights interpolate against the empty sequence (</s> then
// padding) as encode_token_weights does; the mask is 1 up to the first </s>; embedding
// vectors replace the token embedding; Layer picks a block's normed output.
func TestEncoderWeights(t *testing.T) {
	rt := newRuntime(t)
	m := reference(t, rt, synthT5(tinySize, 7))
	defer m.Release()
	ctx := context.Background()
	ids := tinyIDs[0]
	weightsOf := []float64{1, 1.2, 0.8, 1, 1, 1, 1, 1, 1, 1, 1, 1}
	toks := make([]clip.Token, len(ids))
	for i, id := range ids {
		toks[i] = clip.Token{ID: id, Weight: weightsOf[i]}
	}
	for _, masked := range []bool{false, true} {
		enc := NewEncoder(m)
		enc.AttentionMask = masked
		got, err := enc.Encode(ctx, toks)
		if err != nil {
			t.Fatal(err)
		}
		gv, _ := got.Cond.Float32()
		got.Release()
		empty := make([]int, len(ids))
		empty[0] = EndID
		var mask [][]int
		if masked {
			if !equalInts(got.Mask, tinyMask[0]) {
				t.Fatalf("mask %v, want %v", got.Mask, tinyMask[0])
			}
			mask = [][]int{tinyMask[0], append([]int{1}, make([]int, len(ids)-1)...)}
		} else if got.Mask != nil {
			t.Fatalf("mask %v returned without AttentionMask", got.Mask)
		}
		both, err := m.Encode(ctx, [][]int{ids, empty}, mask)
		if err != nil {
			t.Fatal(err)
		}
		bv, _ := both.Float32()
		both.Release()
		d := m.DModel
		want := make([]float32, len(ids)*d)
		for j := range ids {
			for k := 0; k < d; k++ {
				z, e := bv[j*d+k], bv[(len(ids)+j)*d+k]
				want[j*d+k] = (z-e)*float32(weightsOf[j]) + e
			}
		}
		closeTo(t, "weighted", gv, want, 1e-6, 1e-6)
	}

	// An embedding vector in place of token 2 equals feeding that row as an embedding.
	vec := make([]float32, m.DModel)
	for i := range vec {
		vec[i] = float32(i%7) * 0.1
	}
	toks = make([]clip.Token, len(ids))
	for i, id := range ids {
		toks[i] = clip.Token{ID: id, Weight: 1}
	}
	toks[2] = clip.Token{ID: -1, Embed: vec, Weight: 1}
	enc := NewEncoder(m)
	enc.AttentionMask = true
	got, err := enc.Encode(ctx, toks)
	if err != nil {
		t.Fatal(err)
	}
	defer got.Release()
	if !equalInts(got.Mask, tinyMask[0]) {
		t.Fatalf("mask with an embedding %v, want %v", got.Mask, tinyMask[0])
	}
	x := mustEmbed(t, m, [][]int{ids})
	xs, _ := x.HostFloat32()
	copy(xs[2*m.DModel:], vec)
	o, err := m.Forward(ctx, x, Params{Mask: tinyMask[:1], Intermediate: NoIntermediate})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Release()
	wv, _ := o.Last.Float32()
	gv, _ := got.Cond.Float32()
	closeTo(t, "embedding", gv, wv, 0, 0)

	// Layer −2: the second-to-last block's output through the final norm.
	enc = NewEncoder(m)
	enc.Layer = -2
	toks[2] = clip.Token{ID: ids[2], Weight: 1}
	hid, err := enc.Encode(ctx, toks)
	if err != nil {
		t.Fatal(err)
	}
	defer hid.Release()
	o2, err := m.Forward(ctx, mustEmbed(t, m, [][]int{ids}), Params{Intermediate: 1, NormIntermediate: true})
	if err != nil {
		t.Fatal(err)
	}
	defer o2.Release()
	hv, _ := hid.Cond.Float32()
	iv, _ := o2.Intermediate.Float32()
	closeTo(t, "layer -2", hv, iv, 0, 0)
}

// TestRelativeBucket checks T5's bucket function (32 buckets, max distance 128) against
// the buckets PyTorch 2.6 computes with ComfyUI's _relative_position_bucket for every
// relative position −300 … 300, given as the first distance of each bucket.
func TestRelativeBucket(t *testing.T) {
	// distance where each bucket starts; keys after the query add 16.
	starts := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 23, 32, 46, 64, 91}
	for d := 0; d <= 300; d++ {
		want := 0
		for b, s := range starts {
			if d >= s {
				want = b
			}
		}
		if got := relativeBucket(-d, 32, 128); got != want {
			t.Errorf("bucket(%d) = %d, want %d", -d, got, want)
		}
		if d > 0 {
			want += 16
		}
		if got := relativeBucket(d, 32, 128); got != want {
			t.Errorf("bucket(%d) = %d, want %d", d, got, want)
		}
	}
}
