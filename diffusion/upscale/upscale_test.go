package upscale

import (
	"bytes"
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/tiling"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/internal/dtype"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/safetensors"
	"github.com/forgeflow/forgeflow/weights/torch/torchtest"
)

func testRuntime(t testing.TB) *gpu.Runtime {
	t.Helper()
	rt, err := gpu.New(gpu.Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	return rt
}

// stored rounds values through the file's dtype, as the reference must see them.
func stored(v []float32, dt weights.DType) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		switch dt {
		case weights.F16:
			x = dtype.F16ToF32(dtype.F32ToF16(x))
		case weights.BF16:
			x = dtype.BF16ToF32(dtype.F32ToBF16(x))
		}
		out[i] = float64(x)
	}
	return out
}

// writeSpec writes a random checkpoint and returns its path and the reference's view
// of its tensors.
func writeSpec(t testing.TB, s RandomSpec, seed uint64, dt weights.DType) (string, stateRef) {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteRandom(&buf, s, seed, dt); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "model.safetensors")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, refState(t, s, seed, dt)
}

func refState(t testing.TB, s RandomSpec, seed uint64, dt weights.DType) stateRef {
	t.Helper()
	ts, err := s.Tensors()
	if err != nil {
		t.Fatal(err)
	}
	st := stateRef{}
	for _, rt := range ts {
		st[rt.Name] = tensor{shape: rt.Shape, v: stored(rt.Values(seed), dt)}
	}
	return st
}

func randImage(seed uint64, n, c, h, w int) Image {
	r := rand.New(rand.NewPCG(seed, 7))
	px := make([]float32, n*c*h*w)
	for i := range px {
		px[i] = r.Float32()
	}
	return Image{N: n, C: c, H: h, W: w, Pix: px}
}

// closeTo fails unless |got − want| ≤ tol·(1 + max|want|) everywhere: float32 rounding
// grows with the magnitudes inside the network (SPAN scales its input by 255), so the
// bound is relative to the output's scale.
func closeTo(t *testing.T, got []float32, want []float64, tol float64) {
	t.Helper()
	closeToScale(t, got, want, tol, maxAbs(want))
}

func maxAbs(v []float64) float64 {
	big := 0.0
	for _, x := range v {
		big = max(big, math.Abs(x))
	}
	return big
}

// closeToScale is closeTo with the scale given: a clamped output is compared at the
// scale of the network's raw output.
func closeToScale(t *testing.T, got []float32, want []float64, tol, big float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d values, want %d", len(got), len(want))
	}
	worst, at := 0.0, 0
	for i := range want {
		d := math.Abs(float64(got[i]) - want[i])
		if !(d <= worst) {
			worst, at = d, i
		}
	}
	if worst > tol*(1+big) {
		t.Fatalf("[%d] = %v, want %v (|error| %.3g > %.3g·(1 + %.3g))", at, got[at], want[at], worst, tol, big)
	}
}

var forwardCases = []struct {
	name      string
	spec      RandomSpec
	dt        weights.DType
	h, w      int
	arch      string
	scale, in int
	tags      string
	// tol bounds the network's error relative to its output's scale (5e-5 when 0).
	tol float64
}{
	{"esrgan-new-x4", RandomSpec{Arch: "ESRGAN", In: 3, Out: 3, Features: 8, Growth: 4, Blocks: 2, Scale: 4}, weights.F32, 7, 6, "ESRGAN", 4, 3, "8nf, 2nb", 0},
	{"esrgan-old-x2", RandomSpec{Arch: "ESRGAN", Layout: "old", In: 3, Out: 3, Features: 8, Growth: 4, Blocks: 2, Scale: 2}, weights.F32, 6, 9, "ESRGAN", 2, 3, "8nf, 2nb", 0},
	{"esrgan-bsrgan-x1", RandomSpec{Arch: "ESRGAN", Layout: "bsrgan", In: 3, Out: 3, Features: 8, Growth: 4, Blocks: 1, Scale: 1}, weights.F32, 5, 5, "ESRGAN", 1, 3, "8nf, 1nb", 0},
	{"esrgan-plus-old-x4", RandomSpec{Arch: "ESRGAN", Layout: "old", In: 3, Out: 3, Features: 8, Growth: 4, Blocks: 2, Scale: 4, Plus: true}, weights.F32, 5, 4, "ESRGAN", 4, 3, "ESRGAN+, 8nf, 2nb", 0},
	{"esrgan-old-x8-f16", RandomSpec{Arch: "ESRGAN", Layout: "old", In: 3, Out: 3, Features: 8, Growth: 4, Blocks: 1, Scale: 8}, weights.F16, 3, 4, "ESRGAN", 8, 3, "8nf, 1nb", 0},
	{"realesrgan-x2-unshuffle", RandomSpec{Arch: "ESRGAN", In: 12, Out: 3, Features: 8, Growth: 4, Blocks: 1, Scale: 4}, weights.F32, 7, 5, "ESRGAN", 2, 3, "8nf, 1nb, unshuffle", 0},
	{"realesrgan-x1-unshuffle-bf16", RandomSpec{Arch: "ESRGAN", In: 48, Out: 3, Features: 8, Growth: 4, Blocks: 1, Scale: 4}, weights.BF16, 9, 6, "ESRGAN", 1, 3, "8nf, 1nb, unshuffle", 0},
	{"compact-x4", RandomSpec{Arch: "Compact", In: 3, Out: 3, Features: 8, Blocks: 3, Scale: 4}, weights.F32, 6, 7, "RealESRGAN Compact", 4, 3, "8nf, 3nc", 0},
	{"compact-x1", RandomSpec{Arch: "Compact", In: 3, Out: 3, Features: 8, Blocks: 1, Scale: 1}, weights.F32, 5, 6, "RealESRGAN Compact", 1, 3, "8nf, 1nc", 0},
	{"compact-x2-f16", RandomSpec{Arch: "Compact", In: 3, Out: 3, Features: 8, Blocks: 2, Scale: 2}, weights.F16, 4, 5, "RealESRGAN Compact", 2, 3, "8nf, 2nc", 0},
	{"span-x4", RandomSpec{Arch: "SPAN", In: 3, Out: 3, Features: 8, Scale: 4}, weights.F32, 5, 6, "SPAN", 4, 3, "8nf",
		// the input is scaled by 255 first: float32 sums of values in the thousands
		3e-4},
	{"span-x2-no-norm", RandomSpec{Arch: "SPAN", In: 3, Out: 3, Features: 8, Scale: 2, NoNorm: true}, weights.F32, 6, 5, "SPAN", 2, 3, "8nf", 0},
}

// TestForwardMatchesReference loads each architecture and layout from a tiny random
// checkpoint and compares the network (Forward, unclamped) and one descriptor call
// through Upscale (padded, clamped, cropped) with the float64 reference.
func TestForwardMatchesReference(t *testing.T) {
	rt := testRuntime(t)
	for i, tc := range forwardCases {
		t.Run(tc.name, func(t *testing.T) {
			path, st := writeSpec(t, tc.spec, uint64(100+i), tc.dt)
			m, err := Load(rt, path)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			if m.Arch != tc.arch || m.Scale != tc.scale || m.InChannels != tc.in || m.OutChannels != 3 || strings.Join(m.Tags, ", ") != tc.tags {
				t.Fatalf("loaded %s, %d→%d channels; want %s %dx (%s), %d→3", m, m.InChannels, m.OutChannels, tc.arch, tc.scale, tc.tags, tc.in)
			}
			ref := describe(tc.spec.Arch, st)
			if ref.scale != m.Scale || ref.in != m.InChannels {
				t.Fatalf("reference says %dx with %d channels", ref.scale, ref.in)
			}
			// The network alone, on an input that meets the size requirements.
			h, w := 8, 12
			img := randImage(uint64(i), 1, m.InChannels, h, w)
			x, err := rt.FromFloat32(img.Pix, 1, m.InChannels, h, w)
			if err != nil {
				t.Fatal(err)
			}
			y, err := m.Forward(rt, x)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := y.Float32()
			want := ref.forward(tensor{shape: []int{m.InChannels, h, w}, v: f64s(img.Pix)})
			tol := tc.tol
			if tol == 0 {
				tol = 5e-5
			}
			closeTo(t, got, want.v, tol)
			scale := maxAbs(want.v)
			// One tile through Upscale: padding, clamp and crop as the descriptor does.
			img = randImage(uint64(i), 1, m.InChannels, tc.h, tc.w)
			up, err := m.Upscale(context.Background(), rt, img, TileOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if up.H != tc.h*m.Scale || up.W != tc.w*m.Scale || up.C != 3 {
				t.Fatalf("upscaled to %dx%dx%d", up.W, up.H, up.C)
			}
			want = ref.call(tensor{shape: []int{m.InChannels, tc.h, tc.w}, v: f64s(img.Pix)})
			closeToScale(t, up.Pix, want.v, tol, scale)
		})
	}
}

func f64s(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

// TestUpscaleTiled runs images larger than the tile: the blend of the tiles must equal
// the reference tiled_scale (every tile padded, clamped and cropped on its own), and
// progress must count comfy.utils.get_tiled_scale_steps tiles.
func TestUpscaleTiled(t *testing.T) {
	rt := testRuntime(t)
	for i, tc := range []struct {
		name              string
		spec              RandomSpec
		n, h, w           int
		tile, overlap     int
		wantTiles, wantSc int
	}{
		{"esrgan-x2", RandomSpec{Arch: "ESRGAN", In: 3, Out: 3, Features: 8, Growth: 4, Blocks: 1, Scale: 2}, 2, 37, 29, 16, 4, 9, 2},
		{"realesrgan-x2-unshuffle", RandomSpec{Arch: "ESRGAN", In: 12, Out: 3, Features: 8, Growth: 4, Blocks: 1, Scale: 4}, 1, 23, 30, 13, 3, 6, 2},
		{"compact-x4-wide", RandomSpec{Arch: "Compact", In: 3, Out: 3, Features: 8, Blocks: 2, Scale: 4}, 1, 9, 40, 16, 5, 4, 4},
		{"span-x2", RandomSpec{Arch: "SPAN", In: 3, Out: 3, Features: 8, Scale: 2, NoNorm: true}, 1, 20, 18, 12, 4, 4, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, st := writeSpec(t, tc.spec, uint64(200+i), weights.F32)
			m, err := Load(rt, path)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			ref := describe(tc.spec.Arch, st)
			img := randImage(uint64(300+i), tc.n, 3, tc.h, tc.w)
			calls, last := 0, 0
			up, err := m.Upscale(context.Background(), rt, img, TileOptions{Tile: tc.tile, Overlap: tc.overlap,
				Progress: func(done, total int) { calls, last = done, total }})
			if err != nil {
				t.Fatal(err)
			}
			if steps := tc.n * tiling.Steps(tc.w, tc.h, tc.tile, tc.tile, tc.overlap); calls != steps || last != steps || steps != tc.n*tc.wantTiles {
				t.Errorf("progress %d of %d, want %d tiles", calls, last, tc.n*tc.wantTiles)
			}
			per := 3 * tc.h * tc.w
			oper := 3 * tc.h * tc.w * tc.wantSc * tc.wantSc
			for b := 0; b < tc.n; b++ {
				want := ref.tiledScale(tensor{shape: []int{3, tc.h, tc.w}, v: f64s(img.Pix[b*per : (b+1)*per])}, tc.tile, tc.overlap)
				for j, v := range want.v {
					want.v[j] = math.Min(1, math.Max(0, v))
				}
				closeTo(t, up.Pix[b*oper:(b+1)*oper], want.v, 2e-5)
			}
		})
	}
}

// TestTileSize halves the tile as ComfyUI does on an out-of-memory error, here when a
// tile's estimated activations exceed the budget, and gives up below 128.
func TestTileSize(t *testing.T) {
	rt := testRuntime(t)
	path, _ := writeSpec(t, RandomSpec{Arch: "ESRGAN", In: 3, Out: 3, Features: 8, Growth: 4, Blocks: 1, Scale: 4}, 1, weights.F32)
	m, err := Load(rt, path)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if p256, p512 := m.PeakBytes(256, 256), m.PeakBytes(512, 512); !(p512 > 3*p256) {
		t.Fatalf("PeakBytes does not grow with the tile: %d at 256², %d at 512²", p256, p512)
	}
	for _, tc := range []struct {
		h, w   int
		budget int64
		want   int
		err    bool
	}{
		{1000, 1000, 0, 512, false},
		{1000, 1000, m.PeakBytes(512, 512), 512, false},
		{1000, 1000, m.PeakBytes(512, 512) - 1, 256, false},
		{1000, 1000, m.PeakBytes(128, 128), 128, false},
		{1000, 1000, m.PeakBytes(128, 128) - 1, 0, true},
		{100, 100, m.PeakBytes(100, 100), 512, false}, // the whole image is one tile
	} {
		got, err := m.TileSize(tc.h, tc.w, TileOptions{Budget: tc.budget})
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("TileSize(%d, %d, budget %d) = %d, %v; want %d (error %v)", tc.h, tc.w, tc.budget, got, err, tc.want, tc.err)
		}
	}
	_, err = m.Upscale(context.Background(), rt, randImage(1, 1, 3, 300, 300), TileOptions{Budget: 1 << 10})
	if err == nil || !strings.Contains(err.Error(), "128-pixel tile") {
		t.Errorf("an impossible budget gave %v", err)
	}
}

// TestWeightsStayStored: F16 and BF16 checkpoints keep their dtype in the network.
func TestWeightsStayStored(t *testing.T) {
	rt := testRuntime(t)
	for _, dt := range []weights.DType{weights.F16, weights.BF16} {
		path, _ := writeSpec(t, RandomSpec{Arch: "ESRGAN", In: 3, Out: 3, Features: 8, Growth: 4, Blocks: 1, Scale: 2}, 1, dt)
		m, err := Load(rt, path)
		if err != nil {
			t.Fatal(err)
		}
		if got := m.net.(*esrgan).Body[0].RDB2.Conv3.Weight.DType().String(); got != string(dt) {
			t.Errorf("%s file: weight held as %s", dt, got)
		}
		m.Close()
	}
}

// writeEntries writes raw tensors as safetensors.
func writeEntries(t *testing.T, names []string, shapes [][]int64) string {
	t.Helper()
	var entries []safetensors.Entry
	for i, n := range names {
		size := int64(4)
		for _, d := range shapes[i] {
			size *= d
		}
		entries = append(entries, safetensors.Entry{Name: n, DType: weights.F32, Shape: shapes[i], Data: make([]byte, size)})
	}
	var buf bytes.Buffer
	if err := safetensors.Write(&buf, entries, nil); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "x.safetensors")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestUnsupportedArchitectures: files of architectures spandrel knows but forgeflow does
// not run are refused naming the architecture; anything else as no upscale model.
func TestUnsupportedArchitectures(t *testing.T) {
	rt := testRuntime(t)
	one := []int64{1}
	for _, tc := range []struct {
		name string
		keys []string
		want string
	}{
		{"DAT", []string{"conv_first.weight", "before_RG.1.weight", "layers.0.blocks.0.ffn.sg.norm.weight", "norm.weight"}, "DAT models are not supported"},
		{"SwinIR with ComfyUI's module. prefix", []string{"module.conv_first.weight", "module.layers.0.residual_group.blocks.0.norm1.weight",
			"module.layers.0.residual_group.blocks.0.mlp.fc1.bias", "module.layers.0.residual_group.blocks.0.attn.relative_position_index"}, "SwinIR models are not supported"},
		{"Swin2SR", []string{"conv_first.weight", "patch_embed.proj.weight", "layers.0.residual_group.blocks.0.norm1.weight",
			"layers.0.residual_group.blocks.0.attn.relative_position_index"}, "Swin2SR models are not supported"},
		{"HAT", []string{"relative_position_index_SA", "conv_first.weight", "layers.0.residual_group.blocks.0.conv_block.cab.0.weight"}, "HAT models are not supported"},
		{"MMRealSR looks like ESRGAN but comes first", []string{"conv_first.weight", "body.0.rdb1.conv1.weight", "conv_body.weight", "conv_last.weight",
			"am_list.0.fc.0.weight", "de_net.conv_first.0.weight"}, "MMRealSR models are not supported"},
		{"RealCUGAN", []string{"unet1.conv1.conv.0.weight", "unet2.conv1.conv.0.weight"}, "RealCUGAN models are not supported"},
		{"a VAE", []string{"encoder.conv_in.weight", "decoder.conv_out.weight"}, "not an upscale model of a known architecture"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			shapes := make([][]int64, len(tc.keys))
			for i := range shapes {
				shapes[i] = one
			}
			_, err := Load(rt, writeEntries(t, tc.keys, shapes))
			var ue *UnsupportedError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "supported: RealESRGAN Compact, SPAN, ESRGAN") {
				t.Fatalf("got %v, want an UnsupportedError with %q", err, tc.want)
			}
		})
	}
}

// TestLoadPTH reads torch.save archives: Real-ESRGAN's {"params_ema": {...}} and a file
// holding both "params" and "params_ema", where spandrel takes params_ema.
func TestLoadPTH(t *testing.T) {
	rt := testRuntime(t)
	spec := RandomSpec{Arch: "ESRGAN", In: 3, Out: 3, Features: 8, Growth: 4, Blocks: 1, Scale: 2}
	tensors := func(prefix string, seed uint64) []torchtest.Tensor {
		ts, _ := spec.Tensors()
		var out []torchtest.Tensor
		for _, r := range ts {
			data, _ := EncodeValues(r.Values(seed), weights.F32)
			shape := make([]int64, len(r.Shape))
			for i, d := range r.Shape {
				shape[i] = int64(d)
			}
			out = append(out, torchtest.Tensor{Name: prefix + r.Name, DType: weights.F32, Shape: shape, Data: data})
		}
		return out
	}
	img := randImage(5, 1, 3, 6, 5)
	for _, tc := range []struct {
		name string
		ts   []torchtest.Tensor
		wrap string
	}{
		{"params_ema", tensors("", 1), "params_ema"},
		{"params and params_ema", append(tensors("params.", 2), tensors("params_ema.", 1)...), ""},
		{"module prefix", tensors("module.", 1), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, err := torchtest.Zip(tc.ts, tc.wrap)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "RealESRGAN_x2.pth")
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
			m, err := Load(rt, path)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			up, err := m.Upscale(context.Background(), rt, img, TileOptions{})
			if err != nil {
				t.Fatal(err)
			}
			want := describe("ESRGAN", refState(t, spec, 1, weights.F32)).call(tensor{shape: []int{3, 6, 5}, v: f64s(img.Pix)})
			closeTo(t, up.Pix, want.v, 2e-5)
		})
	}
}

// TestLoadErrors: damaged files fail with an error that says what and where.
func TestLoadErrors(t *testing.T) {
	rt := testRuntime(t)
	spec := RandomSpec{Arch: "ESRGAN", In: 3, Out: 3, Features: 8, Growth: 4, Blocks: 2, Scale: 2}
	var good bytes.Buffer
	if err := WriteRandom(&good, spec, 1, weights.F32); err != nil {
		t.Fatal(err)
	}
	ts, _ := spec.Tensors()
	without := func(skip string, reshape map[string][]int64) string {
		var names []string
		var shapes [][]int64
		for _, r := range ts {
			if r.Name == skip {
				continue
			}
			s := make([]int64, len(r.Shape))
			for i, d := range r.Shape {
				s[i] = int64(d)
			}
			if ns, ok := reshape[r.Name]; ok {
				s = ns
			}
			names, shapes = append(names, r.Name), append(shapes, s)
		}
		return writeEntries(t, names, shapes)
	}
	truncated := filepath.Join(t.TempDir(), "cut.safetensors")
	if err := os.WriteFile(truncated, good.Bytes()[:good.Len()/2], 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path, want string
	}{
		{"missing tensor", without("body.1.rdb2.conv3.weight", nil), "body.1.rdb2.conv3.weight"},
		{"wrong shape", without("", map[string][]int64{"conv_body.weight": {8, 4, 3, 3}}), "trunk conv has shape [8 4 3 3]"},
		{"truncated", truncated, "safetensors"},
		{"no file", filepath.Join(t.TempDir(), "none.pth"), "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Load(rt, tc.path)
			if err == nil {
				m.Close()
				t.Fatal("loaded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not name %q", err, tc.want)
			}
		})
	}
	// An image of the wrong channel count is refused before anything runs.
	path, _ := writeSpec(t, spec, 1, weights.F32)
	m, err := Load(rt, path)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := m.Upscale(context.Background(), rt, randImage(1, 1, 4, 8, 8), TileOptions{}); err == nil || !strings.Contains(err.Error(), "4") {
		t.Errorf("an RGBA image gave %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := m.Upscale(ctx, rt, randImage(1, 1, 3, 8, 8), TileOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("a cancelled run gave %v", err)
	}
}
