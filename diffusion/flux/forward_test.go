package flux

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/sampling"
	"github.com/forgeflow/forgeflow/gpu"
)

// tinyModel writes and loads a TinyRandomSpec model (F32).
func tinyModel(t testing.TB, rt *gpu.Runtime, guidance bool) *Model {
	t.Helper()
	s := TinyRandomSpec(guidance)
	s.Seed = 3
	p := writeModel(t, t.TempDir(), "tiny.safetensors", func(w *bufio.Writer) error { return WriteRandomSafetensors(w, s, gpu.F32) })
	m, err := LoadFile(rt, p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// TestPlaceRefs checks the reference placements of each method against positions
// worked out by hand from Flux._forward for an 8×8 latent and references of 6×10, 5×4
// and 12×3 latent pixels.
func TestPlaceRefs(t *testing.T) {
	sizes := [][2]int{{6, 10}, {5, 4}, {12, 3}}
	for _, c := range []struct {
		method string
		want   []placement
	}{
		// offset: A at (0,0); B below it (11 > 14 fails, so rows) at row 6; C beside
		// both (23 > 13) at column 10.
		{"offset", []placement{{1, 0, 0}, {1, 6, 0}, {1, 0, 10}}},
		{"", []placement{{1, 0, 0}, {1, 6, 0}, {1, 0, 10}}},
		{"index", []placement{{1, 0, 0}, {2, 0, 0}, {3, 0, 0}}},
		// uxo: past the 8×8 image, then past each reference before.
		{"uxo", []placement{{0, 8, 8}, {0, 14, 18}, {0, 19, 22}}},
	} {
		got, err := placeRefs(8, 8, 2, sizes, c.method)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("method %q: %v, want %v", c.method, got, c.want)
		}
	}
	if _, err := placeRefs(8, 8, 2, sizes, "diagonal"); err == nil || !strings.Contains(err.Error(), `"diagonal"`) {
		t.Errorf("unknown method: err = %v", err)
	}
	// Offsets round to patches: 19 latent pixels are row 10 (process_img's (19+1)//2).
	ids := positionIDs(3, 2, 2, 0, 19, 22)
	if want := []float32{0, 10, 11, 0, 11, 11}; !slices.Equal(ids, want) {
		t.Errorf("ids %v, want %v", ids, want)
	}
}

// TestForwardPadding checks that an odd-sized latent gives the output of its circular
// padding, cropped.
func TestForwardPadding(t *testing.T) {
	rt := newRuntime(t)
	m := tinyModel(t, rt, true)
	in := tinyInputs(t, rt, 1, 7, 5)
	got := forward(t, rt, m, in)
	xv := values(t, in.X)
	pad := make([]float32, 16*8*6)
	for c := 0; c < 16; c++ {
		for y := 0; y < 8; y++ {
			for x := 0; x < 6; x++ {
				pad[(c*8+y)*6+x] = xv[(c*7+y%7)*5+x%5]
			}
		}
	}
	pin := in
	pin.X, _ = rt.FromFloat32(pad, 1, 16, 8, 6)
	full := forward(t, rt, m, pin)
	for c := 0; c < 16; c++ {
		for y := 0; y < 7; y++ {
			for x := 0; x < 5; x++ {
				if g, w := got[(c*7+y)*5+x], full[(c*8+y)*6+x]; g != w {
					t.Fatalf("[%d %d %d] = %v, the padded latent gives %v", c, y, x, g, w)
				}
			}
		}
	}
}

// TestForwardBatch checks that a batch of two gives each sample's own output, and that
// a reference latent of batch 1 serves both samples.
func TestForwardBatch(t *testing.T) {
	rt := newRuntime(t)
	m := tinyModel(t, rt, true)
	in := tinyInputs(t, rt, 2, 6, 4)
	in.Timesteps = scalars(t, rt, 0.25, 0.8)
	in.Guidance = scalars(t, rt, 1, 4)
	in.RefLatents = []*gpu.Tensor{randTensor(t, rt, 9, 1, 16, 4, 6)}
	both := forward(t, rt, m, in)
	per := len(both) / 2
	for i := 0; i < 2; i++ {
		one := Inputs{Timesteps: scalars(t, rt, []float32{0.25, 0.8}[i]), Guidance: scalars(t, rt, []float32{1, 4}[i]), RefLatents: in.RefLatents}
		var err error
		for _, p := range []struct {
			dst **gpu.Tensor
			src *gpu.Tensor
		}{{&one.X, in.X}, {&one.Context, in.Context}, {&one.Y, in.Y}} {
			if *p.dst, err = gpu.Narrow(p.src, 0, i, 1); err != nil {
				t.Fatal(err)
			}
		}
		got := forward(t, rt, m, one)
		if e := relErr(got, both[i*per:(i+1)*per]); e > 1e-6 {
			t.Errorf("sample %d alone differs from the batch by %.3g", i, e)
		}
	}
}

// TestGuidance checks that schnell (no guidance_in) ignores guidance and dev uses it.
func TestGuidance(t *testing.T) {
	rt := newRuntime(t)
	for _, dev := range []bool{true, false} {
		m := tinyModel(t, rt, dev)
		if m.Guidance() != dev || m.Config.GuidanceEmbed != dev {
			t.Fatalf("guidance embedding %v, want %v", m.Guidance(), dev)
		}
		in := tinyInputs(t, rt, 1, 4, 4)
		a := forward(t, rt, m, in)
		in.Guidance = scalars(t, rt, 9)
		b := forward(t, rt, m, in)
		in.Guidance = nil
		c := forward(t, rt, m, in)
		if dev == slices.Equal(a, b) || dev == slices.Equal(a, c) {
			t.Errorf("dev=%v: guidance 3.5, 9 and none give equal outputs: %v %v", dev, slices.Equal(a, b), slices.Equal(a, c))
		}
	}
}

// TestSkipBlocks checks Skip Layer Guidance's block skipping: leaving out every block
// equals a model without blocks, skipping a block that does not exist changes nothing,
// and skipping one block changes the output.
func TestSkipBlocks(t *testing.T) {
	rt := newRuntime(t)
	m := tinyModel(t, rt, true)
	in := tinyInputs(t, rt, 1, 4, 6)
	full := forward(t, rt, m, in)
	bare := *m
	bare.DoubleBlocks, bare.SingleBlocks = nil, nil
	want := forward(t, rt, &bare, in)
	skipAll := in
	skipAll.SkipDouble, skipAll.SkipSingle = []int{0}, []int{0}
	if got := forward(t, rt, m, skipAll); !slices.Equal(got, want) {
		t.Errorf("skipping every block differs from a model without blocks (rel %.3g)", relErr(got, want))
	}
	none := in
	none.SkipDouble, none.SkipSingle = []int{5}, []int{-1, 3}
	if got := forward(t, rt, m, none); !slices.Equal(got, full) {
		t.Errorf("skipping absent blocks changed the output (rel %.3g)", relErr(got, full))
	}
	for _, one := range []Inputs{{SkipDouble: []int{0}}, {SkipSingle: []int{0}}} {
		s := in
		s.SkipDouble, s.SkipSingle = one.SkipDouble, one.SkipSingle
		got := forward(t, rt, m, s)
		if slices.Equal(got, full) || slices.Equal(got, want) {
			t.Errorf("skip double %v single %v: output equals the full or the bare model's", one.SkipDouble, one.SkipSingle)
		}
	}
}

// TestDenoise checks apply_model for flow models: denoised = x − σ·model(x, σ).
func TestDenoise(t *testing.T) {
	rt := newRuntime(t)
	m := tinyModel(t, rt, false)
	ms := m.DefaultSampling()
	if ms.Prediction() != sampling.Flow || ms.Timestep(0.5) != 0.5 {
		t.Fatalf("schnell sampling: prediction %v, timestep(0.5) = %v", ms.Prediction(), ms.Timestep(0.5))
	}
	in := tinyInputs(t, rt, 1, 4, 6)
	const sigma = 0.6
	in.Timesteps = scalars(t, rt, sigma)
	v := forward(t, rt, m, in)
	den, err := m.Denoise(context.Background(), rt, ms, sigma, in)
	if err != nil {
		t.Fatal(err)
	}
	x, d := values(t, in.X), values(t, den)
	for i := range d {
		if want := x[i] - v[i]*sigma; d[i] != want {
			t.Fatalf("denoised[%d] = %v, want %v", i, d[i], want)
		}
	}
	if dev := tinyModel(t, rt, true).DefaultSampling(); dev.Timestep(0.3) != 0.3 || dev.SigmaMax() != 1 {
		t.Errorf("dev sampling: timestep(0.3) = %v, sigma max %v", dev.Timestep(0.3), dev.SigmaMax())
	}
}

// TestForwardErrors feeds malformed inputs; each must fail with a message that names
// the problem, never panic.
func TestForwardErrors(t *testing.T) {
	rt := newRuntime(t)
	m := tinyModel(t, rt, true)
	good := func() Inputs { return tinyInputs(t, rt, 1, 4, 4) }
	for _, c := range []struct {
		name, want string
		edit       func(*Inputs)
	}{
		{"no context", "required", func(in *Inputs) { in.Context = nil }},
		{"channels", "want (B, 16, H, W)", func(in *Inputs) { in.X = randTensor(t, rt, 1, 1, 4, 4, 4) }},
		{"rank", "want (B, 16, H, W)", func(in *Inputs) { in.X = randTensor(t, rt, 1, 16, 4, 4) }},
		{"context width", "context", func(in *Inputs) { in.Context = randTensor(t, rt, 1, 1, 5, 32) }},
		{"context batch", "context", func(in *Inputs) { in.Context = randTensor(t, rt, 1, 2, 5, 64) }},
		{"timesteps batch", "timesteps", func(in *Inputs) { in.Timesteps = scalars(t, rt, 1, 2, 3) }},
		{"y width", "pooled", func(in *Inputs) { in.Y = randTensor(t, rt, 1, 1, 8) }},
		{"ref channels", "reference latent 0", func(in *Inputs) { in.RefLatents = []*gpu.Tensor{randTensor(t, rt, 1, 1, 4, 4, 4)} }},
		{"ref method", "method", func(in *Inputs) {
			in.RefLatents, in.RefMethod = []*gpu.Tensor{randTensor(t, rt, 1, 1, 16, 4, 4)}, "spiral"
		}},
		{"concat", "concat", func(in *Inputs) { in.Concat = randTensor(t, rt, 1, 1, 4, 2, 2) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			in := good()
			c.edit(&in)
			_, err := m.Forward(context.Background(), rt, in)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want one containing %q", err, c.want)
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := m.Forward(ctx, rt, good()); err != context.Canceled {
		t.Errorf("cancelled context: err = %v", err)
	}
}

// TestLoadErrors checks that bad files and options fail with clear errors.
func TestLoadErrors(t *testing.T) {
	rt := newRuntime(t)
	dir := t.TempDir()
	s := TinyRandomSpec(true)
	good := writeModel(t, dir, "good.safetensors", func(w *bufio.Writer) error { return WriteRandomSafetensors(w, s, gpu.BF16) })
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	trunc := filepath.Join(dir, "truncated.safetensors")
	os.WriteFile(trunc, data[:len(data)/2], 0o644)
	empty := filepath.Join(dir, "empty.safetensors")
	os.WriteFile(empty, nil, 0o644)
	wide := s
	wide.MLPHidden = 3 * 256
	widePath := writeModel(t, dir, "wide.safetensors", func(w *bufio.Writer) error { return WriteRandomSafetensors(w, wide, gpu.BF16) })
	// a file whose single block was made for another MLP width
	ts, _ := s.Tensors()
	for i := range ts {
		if ts[i].Name == "single_blocks.0.linear2.weight" {
			ts[i].Shape = []int{256, 256 + 3*256}
		}
	}
	mixed := writeModel(t, dir, "mixed.safetensors", func(w *bufio.Writer) error { return writeSafetensors(w, ts, 1, gpu.BF16) })
	// no Flux at all
	other := writeModel(t, dir, "other.safetensors", func(w *bufio.Writer) error { return writeSafetensors(w, ts[:3], 1, gpu.BF16) })
	narrow := TinyRandomSpec(true)
	narrow.Hidden, narrow.Heads = 64, 2
	narrowPath := writeModel(t, dir, "narrow.safetensors", func(w *bufio.Writer) error { return WriteRandomSafetensors(w, narrow, gpu.BF16) })
	for _, c := range []struct {
		name, path, want string
		opts             Options
	}{
		{"missing", filepath.Join(dir, "nope.safetensors"), "no such file", Options{}},
		{"truncated", trunc, "safetensors", Options{}},
		{"empty", empty, "safetensors", Options{}},
		{"weight dtype", good, "weight dtype", Options{WeightDType: "int4"}},
		{"axes", good, "rope axes", Options{AxesDim: []int{16, 56, 54}}},
		{"odd axes", good, "even", Options{AxesDim: []int{15, 57, 56}}},
		{"narrow heads need axes", narrowPath, "Options.AxesDim", Options{}},
		{"shape mismatch", mixed, "single_blocks.0.linear2.weight is [256 1024], want [256 1280]", Options{}},
		{"not flux", other, "no Flux transformer", Options{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, err := LoadFile(rt, c.path, c.opts)
			if err == nil {
				m.Close()
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want one containing %q", err, c.want)
			}
		})
	}
	if m, err := LoadFile(rt, widePath, Options{}); err != nil {
		t.Errorf("a consistent 3× MLP model: %v", err)
	} else {
		if m.MLPHidden != 768 || m.Config.MLPRatio != 3 {
			t.Errorf("MLP %d ratio %v, want 768 and 3", m.MLPHidden, m.Config.MLPRatio)
		}
		m.Close()
	}
}
