package sd

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/unet"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/internal/dtype"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/safetensors"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
	"github.com/forgeflow/forgeflow/weights/torch/torchtest"
)

var writeHNModels = flag.String("sd.hnmodels", "", "write the tiny UNet and hypernetworks of the hypernetwork reference to this folder")

// testHN describes a hypernetwork file the tests write: A1111's layout (a dict keyed
// by attention width, each a (keys, values) pair of state dicts named linear.N as
// A1111's HypernetworkModule names its Sequential) with layer structure [1, 2, 1].
type testHN struct {
	file      string
	act       string
	layerNorm bool
	dropout   bool
	lastDrop  bool // last_layer_dropout: a [1, 2, 1] network has Dropout only with it
	activate  bool
	dtype     weights.DType
	widths    []int64
	seed      uint64
}

var testHNs = []testHN{
	{file: "hn_relu_ln.pt", act: "relu", layerNorm: true, dtype: weights.F32, widths: []int64{32, 64}, seed: 1},
	{file: "hn_swish_out.pt", act: "swish", activate: true, dtype: weights.F16, widths: []int64{64, 32, 96}, seed: 2},
	{file: "hn_mish_dropout.pt", act: "mish", dropout: true, lastDrop: true, dtype: weights.F32, widths: []int64{32, 64}, seed: 3},
	{file: "hn_linear.pt", act: "linear", dtype: weights.F32, widths: []int64{64}, seed: 4},
}

// hnValues are deterministic values of a tensor: scale·sin(seed·1.37 + i·0.61).
func hnValues(n int, seed uint64, k int, scale float64) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = float32(scale * math.Sin(float64(seed)*1.37+float64(k)*0.29+float64(i)*0.61))
	}
	return out
}

func hnBytes(v []float32, dt weights.DType) []byte {
	var b []byte
	for _, x := range v {
		if dt == weights.F16 {
			b = binary.LittleEndian.AppendUint16(b, dtype.F32ToF16(x))
		} else {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
		}
	}
	return b
}

// write writes the file and returns its sha256.
func (h testHN) write(t testing.TB, dir string) string {
	t.Helper()
	root := &torchtest.Dict{}
	k := 0
	tensor := func(dt weights.DType, scale, offset float64, shape ...int64) torchtest.Tensor {
		n := int64(1)
		for _, d := range shape {
			n *= d
		}
		k++
		v := hnValues(int(n), h.seed, k, scale)
		for i := range v {
			v[i] += float32(offset)
		}
		return torchtest.Tensor{DType: dt, Shape: shape, Data: hnBytes(v, dt)}
	}
	for _, w := range h.widths {
		var pair torchtest.Tuple
		for range 2 {
			sd := &torchtest.Dict{}
			idx := 0
			for i, io := range [][2]int64{{w, 2 * w}, {2 * w, w}} {
				name := func(s string) string { return "linear." + itoa(idx) + "." + s }
				sd.Set(name("weight"), tensor(h.dtype, 0.3/math.Sqrt(float64(io[0])), 0, io[1], io[0]))
				sd.Set(name("bias"), tensor(h.dtype, 0.05, 0, io[1]))
				idx++
				if h.act != "linear" && (i == 0 || h.activate) {
					idx++ // the activation: no parameters
				}
				if h.layerNorm {
					sd.Set(name("weight"), tensor(weights.F32, 0.2, 1, io[1]))
					sd.Set(name("bias"), tensor(weights.F32, 0.1, 0, io[1]))
					idx++
				}
				if h.dropout && i == 0 {
					idx++
				}
			}
			pair = append(pair, sd)
		}
		root.Set(w, pair)
	}
	root.Set("layer_structure", []any{1.0, 2.0, 1.0})
	root.Set("activation_func", h.act)
	root.Set("is_layer_norm", h.layerNorm)
	root.Set("weight_initialization", "Normal")
	root.Set("use_dropout", h.dropout)
	root.Set("activate_output", h.activate)
	root.Set("last_layer_dropout", h.lastDrop)
	root.Set("name", strings.TrimSuffix(h.file, ".pt"))
	root.Set("step", int64(1000))
	b, err := torchtest.ZipValue(root)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, h.file), b, 0o644); err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func itoa(i int) string { return string(rune('0' + i)) }

// hnCases are the reference runs: a file at a strength.
var hnCases = []struct {
	name, file string
	strength   float64
}{
	{"relu_ln", "hn_relu_ln.pt", 0.8},
	{"swish_out", "hn_swish_out.pt", -0.5},
	{"mish_dropout", "hn_mish_dropout.pt", 1.3},
	{"linear", "hn_linear.pt", 1},
}

// TestHypernetworkAgainstComfyUI samples a tiny SD1-layout UNet patched with
// hypernetworks as ComfyUI 0.3.64's HypernetworkLoader patches it. The expected
// latents were made by tools/refpeer/hypernetwork_ref.py (ComfyUI's own
// load_hypernetwork_patch, set_model_attn1_patch/attn2_patch and comfy.sample.sample
// in the refpeer chroot: euler, 4 steps, cfg 4, seed 7) on the files this test writes;
// the fixture records their sha256. The dropout case was run with the hypernetwork's
// modules in evaluation mode (forgeflow's choice, see hypernetwork.go).
func TestHypernetworkAgainstComfyUI(t *testing.T) {
	if *writeHNModels != "" {
		writeInpaintRefUNet(t, *writeHNModels, "unet_hn.safetensors", 4, 14)
		for _, h := range testHNs {
			h.write(t, *writeHNModels)
		}
		return
	}
	if testing.Short() {
		t.Skip("writes a 13 MB UNet and samples 5 runs")
	}
	fx, err := safetensors.Open("testdata/hypernetwork_refpeer.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	defer fx.Close()
	var sums map[string]string
	if err := json.Unmarshal([]byte(fx.Metadata()["models"]), &sums); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if sum := writeInpaintRefUNet(t, dir, "unet_hn.safetensors", 4, 14); sum != sums["unet_hn.safetensors"] {
		t.Fatalf("unet_hn.safetensors: sha256 %s, the reference used %s", sum, sums["unet_hn.safetensors"])
	}
	for _, h := range testHNs {
		if sum := h.write(t, dir); sum != sums[h.file] {
			t.Fatalf("%s: sha256 %s, the reference used %s", h.file, sum, sums[h.file])
		}
	}
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ck, err := LoadCheckpoint(rt, filepath.Join(dir, "unet_hn.safetensors"), LoadOptions{UNetHeads: unet.Heads{Dim: 64}, SkipCLIP: true, SkipVAE: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
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
	pos, neg := Conditioning{NewCond(tensor("in.pos"), nil)}, Conditioning{NewCond(tensor("in.neg"), nil)}
	latent := tensor("in.latent")
	params := KSamplerParams{Seed: 7, Steps: 4, CFG: 4, Sampler: "euler", Scheduler: "normal", Denoise: 1, StartStep: -1, LastStep: -1}
	sample := func(t *testing.T, m *Model) []float32 {
		out, err := KSample(context.Background(), m, pos, neg, &Latent{Samples: latent}, params, nil)
		if err != nil {
			t.Fatal(err)
		}
		v, _ := out.Samples.Float32()
		return v
	}
	compare := func(t *testing.T, got []float32, key string) {
		wt, err := fx.Tensor(key)
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
	}
	plain := sample(t, ck.Model)
	t.Run("plain", func(t *testing.T) { compare(t, plain, "out.plain") })
	for _, tc := range hnCases {
		t.Run(tc.name, func(t *testing.T) {
			h, err := LoadHypernetwork(rt, filepath.Join(dir, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			m := ck.Model.WithHypernetwork(h, tc.strength)
			if m == ck.Model {
				t.Fatal("the hypernetwork patched nothing")
			}
			got := sample(t, m)
			compare(t, got, "out."+tc.name)
			var moved float64
			for i := range got {
				moved = max(moved, math.Abs(float64(got[i]-plain[i])))
			}
			if moved < 1e-2 {
				t.Errorf("the hypernetwork moved the result by %.3g only", moved)
			}
		})
	}
	t.Run("stacked", func(t *testing.T) {
		// Two hypernetworks on one model run in the order they were added.
		a, err := LoadHypernetwork(rt, filepath.Join(dir, "hn_relu_ln.pt"))
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		b, err := LoadHypernetwork(rt, filepath.Join(dir, "hn_linear.pt"))
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		compare(t, sample(t, ck.Model.WithHypernetwork(a, 0.8).WithHypernetwork(b, 1)), "out.stacked")
	})
}

// TestHypernetworkFiles: options, widths, and files that are refused or patch nothing.
func TestHypernetworkFiles(t *testing.T) {
	dir := t.TempDir()
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range testHNs {
		h.write(t, dir)
	}
	h, err := LoadHypernetwork(rt, filepath.Join(dir, "hn_swish_out.pt"))
	if err != nil {
		t.Fatal(err)
	}
	if got := h.Widths(); len(got) != 3 || got[0] != 32 || got[2] != 96 || h.Activation != "swish" || h.Unsupported != "" {
		t.Fatalf("widths %v activation %q unsupported %q", got, h.Activation, h.Unsupported)
	}
	// F16 weights stay F16.
	if dt := h.layers[64][0][0].linear.Weight.DType(); dt != gpu.F16 {
		t.Errorf("weight dtype %s, want F16", dt)
	}
	h.Close()

	write := func(name string, root *torchtest.Dict) string {
		b, err := torchtest.ZipValue(root)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	f32 := func(shape ...int64) torchtest.Tensor {
		n := int64(1)
		for _, d := range shape {
			n *= d
		}
		return torchtest.Tensor{DType: weights.F32, Shape: shape, Data: make([]byte, 4*n)}
	}
	layer := func(in, out int64) *torchtest.Dict {
		return (&torchtest.Dict{}).Set("linear.0.weight", f32(out, in)).Set("linear.0.bias", f32(out))
	}
	// An activation ComfyUI does not know: loads, patches nothing.
	unknown := write("gelu.pt", (&torchtest.Dict{}).Set(int64(8), torchtest.Tuple{layer(8, 8), layer(8, 8)}).Set("activation_func", "gelu"))
	if h, err := LoadHypernetwork(rt, unknown); err != nil || !strings.Contains(h.Unsupported, "gelu") {
		t.Fatalf("unknown activation: %v, %+v", err, h)
	} else {
		m := &Model{}
		if h.Close(); m.WithHypernetwork(h, 1) != m {
			t.Fatal("a hypernetwork that applies nothing changed the model")
		}
	}
	// A safetensors file: no layers keyed by width, as in ComfyUI.
	st := filepath.Join(dir, "hn.safetensors")
	var buf strings.Builder
	if err := WriteRandomTensors(&buf, []RandomTensor{{Name: "8.0.linear.0.weight", Shape: []int{8, 8}, Scale: 1}}, 1, weights.F32); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(st, []byte(buf.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if h, err := LoadHypernetwork(rt, st); err != nil || h.Unsupported == "" {
		t.Fatalf("safetensors: %v", err)
	} else {
		h.Close()
	}
	for _, tc := range []struct {
		name string
		root *torchtest.Dict
		want string
	}{
		{"not_pair.pt", (&torchtest.Dict{}).Set(int64(8), layer(8, 8)), "not a (keys, values) pair"},
		{"one.pt", (&torchtest.Dict{}).Set(int64(8), torchtest.Tuple{layer(8, 8)}), "want a (keys, values) pair"},
		{"width.pt", (&torchtest.Dict{}).Set(int64(8), torchtest.Tuple{layer(8, 16), layer(8, 8)}), "maps width 8 to 16"},
		{"no_bias.pt", (&torchtest.Dict{}).Set(int64(8), torchtest.Tuple{(&torchtest.Dict{}).Set("linear.0.weight", f32(8, 8)), layer(8, 8)}), "no tensor 8.0.linear.0.bias"},
		{"no_norm.pt", (&torchtest.Dict{}).Set(int64(8), torchtest.Tuple{layer(8, 8), layer(8, 8)}).Set("is_layer_norm", true), "no LayerNorm"},
		{"bad_option.pt", (&torchtest.Dict{}).Set("use_dropout", "yes"), "not a boolean"},
		{"bad_width.pt", (&torchtest.Dict{}).Set(int64(-3), torchtest.Tuple{layer(8, 8), layer(8, 8)}), "attention width -3"},
		{"rank.pt", (&torchtest.Dict{}).Set(int64(8), torchtest.Tuple{(&torchtest.Dict{}).Set("linear.0.weight", f32(64)).Set("linear.0.bias", f32(8)), layer(8, 8)}), "want 2 dimensions"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadHypernetwork(rt, write(tc.name, tc.root))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
	// Truncated and garbage files.
	good, err := os.ReadFile(filepath.Join(dir, "hn_relu_ln.pt"))
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"truncated.pt": good[:len(good)/2], "garbage.pt": []byte("PK\x03\x04 not a zip at all"), "empty.pt": nil} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadHypernetwork(rt, p); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// FuzzLoadHypernetwork: no file makes the loader panic; a file it accepts has MLPs that
// chain back to their width. Seeds: small hypernetworks (width 4; large inputs make Go's
// fuzzer crawl) with and without LayerNorms, and their halves. The default minimisation
// of each new input stalls the run on a loaded machine; bound it:
//
//	go test -run '^$' -fuzz FuzzLoadHypernetwork -fuzztime 30s -fuzzminimizetime 100x ./diffusion/sd
func FuzzLoadHypernetwork(f *testing.F) {
	f32 := func(shape ...int64) torchtest.Tensor {
		n := int64(1)
		for _, d := range shape {
			n *= d
		}
		return torchtest.Tensor{DType: weights.F32, Shape: shape, Data: make([]byte, 4*n)}
	}
	mlp := func(norm bool) *torchtest.Dict {
		d := (&torchtest.Dict{}).Set("linear.0.weight", f32(8, 4)).Set("linear.0.bias", f32(8))
		if norm {
			d.Set("linear.1.weight", f32(8)).Set("linear.1.bias", f32(8))
		}
		d.Set("linear.2.weight", f32(4, 8)).Set("linear.2.bias", f32(4))
		if norm {
			d.Set("linear.3.weight", f32(4)).Set("linear.3.bias", f32(4))
		}
		return d
	}
	for _, norm := range []bool{false, true} {
		root := (&torchtest.Dict{}).Set(int64(4), torchtest.Tuple{mlp(norm), mlp(norm)}).
			Set("activation_func", "relu").Set("is_layer_norm", norm)
		b, err := torchtest.ZipValue(root)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	rt, err := gpu.New(gpu.Options{Threads: 1})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		tf, err := tensorfile.OpenBytes("fuzz.pt", b, tensorfile.Torch, tensorfile.Safetensors)
		if err != nil {
			return
		}
		h, err := loadHypernetwork(rt, tf)
		if err != nil {
			return
		}
		defer h.Close()
		for w, mlps := range h.layers {
			for _, m := range mlps {
				if err := m.check(w); err != nil {
					t.Fatalf("accepted a network that does not chain: %v", err)
				}
			}
		}
	})
}

// BenchmarkHypernetworkPatch is what one hypernetwork adds to one attention of an SD1.5
// UNet at 512² (level 0: 4096 tokens of width 320): the keys' and values' MLPs
// (320 → 640 → 320, ReLU and LayerNorms as A1111's default structure) and the sums.
func BenchmarkHypernetworkPatch(b *testing.B) {
	dir := b.TempDir()
	h := testHN{file: "hn.pt", act: "relu", layerNorm: true, dtype: weights.F16, widths: []int64{320}, seed: 9}
	h.write(b, dir)
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		b.Fatal(err)
	}
	hn, err := LoadHypernetwork(rt, filepath.Join(dir, "hn.pt"))
	if err != nil {
		b.Fatal(err)
	}
	defer hn.Close()
	x := make([]float32, 2*4096*320)
	for i := range x {
		x[i] = float32(math.Sin(float64(i)))
	}
	xt, _ := rt.FromFloat32(x, 2, 4096, 320)
	p := HypernetworkPatch{Net: hn, Strength: 1}
	b.Run("f16/2x4096x320", func(b *testing.B) {
		b.SetBytes(int64(4 * len(x)))
		for b.Loop() {
			_, k, v, err := p.attnInputs(rt, 1, xt, xt, xt)
			if err != nil {
				b.Fatal(err)
			}
			k.Release()
			v.Release()
		}
	})
}
