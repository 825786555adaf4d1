package sd

import (
	"bytes"
	"context"
	"fmt"
	"image/jpeg"
	"math"
	"testing"
	"time"

	"github.com/forgeflow/forgeflow/diffusion/sampling"
	"github.com/forgeflow/forgeflow/diffusion/unet"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/internal/testenv"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

func newRT(t *testing.T) *gpu.Runtime {
	t.Helper()
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return rt
}

func tensorOf(t *testing.T, rt *gpu.Runtime, v []float32, shape ...int) *gpu.Tensor {
	t.Helper()
	x, err := rt.FromFloat32(v, shape...)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// TestAreaMultFeather checks get_area_and_mult's weights: strength inside, linear
// feathering over min(8, size/4) pixels on edges that do not touch the latent border,
// clamping to the latent, and the timestep window.
func TestAreaMultFeather(t *testing.T) {
	c := &modelCond{area: &Area{Height: 8, Width: 8, Y: 4, X: 0}, strength: 0.5, sigmaStart: 1e9, sigmaEnd: 0}
	e, err := areaAndMult(0, c, 16, 16, 1)
	if err != nil || e == nil {
		t.Fatal(e, err)
	}
	if e.ah != 8 || e.aw != 8 || e.y0 != 4 || e.x0 != 0 {
		t.Fatalf("region %+v", e)
	}
	// rr = 2: rows 0 and 7 ×0.5, rows 1 and 6 ×1; column 7 ×0.5 (x = 0 touches the border).
	want := func(y, x int) float32 {
		f := float32(0.5)
		if y == 0 || y == 7 {
			f *= 0.5
		}
		if x == 7 {
			f *= 0.5
		}
		return f
	}
	for y := 0; y < 8; y++ {
		for x := 0; x < 8; x++ {
			if g := e.mult[y*8+x]; g != want(y, x) {
				t.Fatalf("mult[%d][%d] = %v, want %v", y, x, g, want(y, x))
			}
		}
	}
	// An area reaching past the latent is cut; a whole-latent entry is not feathered.
	c2 := &modelCond{area: &Area{Height: 20, Width: 20, Y: 8, X: 12}, strength: 1, sigmaStart: 1e9}
	if e, _ = areaAndMult(0, c2, 16, 16, 1); e.ah != 8 || e.aw != 4 {
		t.Fatalf("clamped region %dx%d, want 8x4", e.ah, e.aw)
	}
	full := &modelCond{strength: 2, sigmaStart: 1e9}
	if e, _ = areaAndMult(0, full, 4, 4, 1); len(e.mult) != 16 || e.mult[0] != 2 || e.mult[15] != 2 {
		t.Fatalf("full mult %v", e.mult)
	}
	// Timestep range: active while sigmaEnd ≤ sigma ≤ sigmaStart.
	r := &modelCond{strength: 1, sigmaStart: 5, sigmaEnd: 1}
	for _, s := range []struct {
		sigma  float64
		active bool
	}{{6, false}, {5, true}, {3, true}, {1, true}, {0.5, false}} {
		e, _ := areaAndMult(0, r, 4, 4, s.sigma)
		if (e != nil) != s.active {
			t.Errorf("sigma %v: active %v, want %v", s.sigma, e != nil, s.active)
		}
	}
}

// TestMultWeightedAverage: overlapping entries of one list average by their weights,
// uncovered pixels of an area-only list stay 0, and each list is kept apart.
func TestMultWeightedAverage(t *testing.T) {
	rt := newRT(t)
	const sigma = 2
	ms := sampling.NewSD(sampling.EPS)
	m := &Model{Runtime: rt, Sampling: ms, Latent: SD15Latent}
	// The fake UNet returns eps = −k/σ where k is the context's first value, so each
	// entry's denoised prediction (x − σ·eps with x = 0) is its k.
	g := &Guider{Model: m, Kind: CFG, CFG: 1}
	var batches []int
	g.forward = func(ctx context.Context, in NetInputs) (*gpu.Tensor, error) {
		batches = append(batches, in.X.Dim(0))
		ctxv, _ := in.Context.Float32()
		per := in.X.Numel() / in.X.Dim(0)
		tokDim := in.Context.Numel() / in.Context.Dim(0)
		out := make([]float32, in.X.Numel())
		for b := 0; b < in.X.Dim(0); b++ {
			for i := 0; i < per; i++ {
				out[b*per+i] = -ctxv[b*tokDim] / sigma
			}
		}
		return rt.FromFloat32(out, in.X.Shape()...)
	}
	mk := func(k float32, area *Area, strength float32) modelCond {
		return modelCond{context: []float32{k, k}, ctxBatch: 1, tokens: 1, dim: 2, area: area, strength: strength, sigmaStart: 1e9}
	}
	a2 := &Area{Height: 4, Width: 4, Y: 4, X: 4}
	pos := []modelCond{mk(1, nil, 1), mk(3, a2, 0.5)}
	neg := []modelCond{mk(-2, a2, 1)}
	d := &denoiser{g: g, shape: [4]int{1, 1, 8, 8}}
	outs, err := d.calcCondBatch(context.Background(), [][]modelCond{pos, neg}, make([]float32, 64), sigma, skipNone)
	if err != nil {
		t.Fatal(err)
	}
	if len(batches) != 2 || batches[0] != 1 || batches[1] != 2 {
		t.Fatalf("batches %v: want the full entry alone, then both 4x4 areas together", batches)
	}
	e, _ := areaAndMult(0, &pos[1], 8, 8, sigma)
	for y := 0; y < 8; y++ {
		for x := 0; x < 8; x++ {
			var m2 float32
			if y >= 4 && x >= 4 {
				m2 = e.mult[(y-4)*4+x-4]
			}
			want := (1 + 3*m2) / (1e-37 + 1 + m2)
			if g := outs[0][y*8+x]; math.Abs(float64(g-want)) > 1e-6 {
				t.Fatalf("pos[%d][%d] = %v, want %v", y, x, g, want)
			}
			wantNeg := float32(0)
			if y >= 4 && x >= 4 {
				wantNeg = -2
			}
			if g := outs[1][y*8+x]; math.Abs(float64(g-wantNeg)) > 1e-6 {
				t.Fatalf("neg[%d][%d] = %v, want %v", y, x, g, wantNeg)
			}
		}
	}
}

// TestSameAreaOpposites: an area entry gets a twin in the other list with the other
// list's text (the smallest enclosing area, else an entry without area), unless that
// list already has the same area.
func TestSameAreaOpposites(t *testing.T) {
	ctxOf := func(v float32) []float32 { return []float32{v} }
	big := &Area{Height: 8, Width: 8}
	small := &Area{Height: 2, Width: 2, Y: 1, X: 1}
	pos := []modelCond{{context: ctxOf(1), area: small, strength: 0.7}}
	neg := []modelCond{{context: ctxOf(2)}, {context: ctxOf(3), area: big}}
	lists := [][]modelCond{pos, neg}
	sameAreaOpposites(lists)
	if len(lists[1]) != 3 {
		t.Fatalf("negative has %d entries, want 3", len(lists[1]))
	}
	twin := lists[1][2]
	if twin.area != small || twin.strength != 0.7 || twin.context[0] != 3 || !twin.fromOtherPrompt {
		t.Fatalf("twin %+v: want the small area with the enclosing big entry's text", twin)
	}
	// The negative's big area finds no positive entry enclosing it (and none without
	// an area), so the positive list stays as it is.
	if len(lists[0]) != 1 {
		t.Fatalf("positive has %d entries, want 1", len(lists[0]))
	}
	// Running again adds nothing: every area now has its counterpart.
	sameAreaOpposites(lists)
	if len(lists[1]) != 3 || len(lists[0]) != 1 {
		t.Fatalf("second pass changed the lists: %d, %d", len(lists[0]), len(lists[1]))
	}
}

// TestEncodeADMGolden: the SDXL y vector for CLIPTextEncodeSDXL's size conditioning
// matches ComfyUI's SDXL.encode_adm for every encode_adm case of golden/unet (its
// kwargs as the size); a case whose sizes are a latent's own (no crop, target = size,
// whole latent pixels) is also checked with no size set, the defaults.
func TestEncodeADMGolden(t *testing.T) {
	_, cases := testenv.GoldenCases[testenv.Case](t, "unet")
	rt := newRT(t)
	m := &Model{Runtime: rt, UNet: &unet.Model{}, Sampling: sampling.NewSD(sampling.EPS), Latent: SDXLLatent, ADM: true}
	n := 0
	for _, c := range cases {
		var fn string
		if c.Decode("config.function", &fn) != nil || fn != "comfy.model_base.SDXL.encode_adm" {
			continue
		}
		n++
		var k struct {
			Width        int `json:"width"`
			Height       int `json:"height"`
			CropW        int `json:"crop_w"`
			CropH        int `json:"crop_h"`
			TargetWidth  int `json:"target_width"`
			TargetHeight int `json:"target_height"`
		}
		if err := c.Decode("config.kwargs", &k); err != nil {
			t.Fatal(err)
		}
		size := &unet.SizeConditioning{Width: k.Width, Height: k.Height, CropW: k.CropW, CropH: k.CropH, TargetWidth: k.TargetWidth, TargetHeight: k.TargetHeight}
		f, err := safetensors.Open(c.Path())
		if err != nil {
			t.Fatal(err)
		}
		read := func(name string) []float32 {
			tn, err := f.Tensor(name)
			if err != nil {
				t.Fatal(err)
			}
			v, err := tn.Float32()
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
		pooled, want := read("in.pooled_output"), read("out.adm")
		m.UNet.LabelEmbed.L1.Weight = tensorOf(t, rt, make([]float32, 2*len(want)), 2, len(want))
		sizes := []*unet.SizeConditioning{size}
		if k.CropW == 0 && k.CropH == 0 && k.Width == k.TargetWidth && k.Height == k.TargetHeight && k.Width%8 == 0 && k.Height%8 == 0 {
			sizes = append(sizes, nil)
		}
		for _, s := range sizes {
			cond := NewCond(tensorOf(t, rt, make([]float32, 77*4), 1, 77, 4), tensorOf(t, rt, pooled, 1, len(pooled)))
			cond.Size = s
			mc, err := prepareConds(m, Conditioning{cond}, k.Height/8, k.Width/8, false)
			if err != nil {
				t.Fatal(err)
			}
			testenv.Close(t, fmt.Sprintf("%s (size %+v)", c.Name, s), mc[0].y, want, c.Tolerance)
		}
		f.Close()
	}
	if n == 0 {
		t.Fatal("golden/unet has no encode_adm case")
	}
	// No pooled output: a clear error.
	if _, err := prepareConds(m, Conditioning{NewCond(tensorOf(t, rt, make([]float32, 4), 1, 1, 4), nil)}, 8, 8, false); err == nil {
		t.Fatal("SDXL conditioning without pooled output: no error")
	}
	// The refiner's vector (2560 = 1280 + 5·256) takes the aesthetic score: 6 for a
	// positive prompt, 2.5 for a negative one, unless set.
	m.UNet.LabelEmbed.L1.Weight = tensorOf(t, rt, make([]float32, 2560), 1, 2560)
	pooled := tensorOf(t, rt, make([]float32, 1280), 1, 1280)
	c := NewCond(tensorOf(t, rt, make([]float32, 4), 1, 1, 4), pooled)
	pos, err := prepareConds(m, Conditioning{c}, 8, 8, false)
	if err != nil {
		t.Fatal(err)
	}
	neg, _ := prepareConds(m, Conditioning{c}, 8, 8, true)
	c.AestheticScore = 2.5
	set, _ := prepareConds(m, Conditioning{c}, 8, 8, false)
	if len(pos[0].y) != 2560 || maxDiff(pos[0].y, neg[0].y) == 0 || maxDiff(neg[0].y, set[0].y) != 0 {
		t.Fatal("refiner aesthetic score defaults are not applied")
	}
}

// TestLatentProcess: process_in/out round trip and the formats' scale and shift.
func TestLatentProcess(t *testing.T) {
	z := []float32{1, -2, 0.5}
	for _, f := range []LatentFormat{SD15Latent, SDXLLatent, FluxLatent} {
		in := f.processIn(z)
		if want := float32((1 - f.Shift) * f.Scale); math.Abs(float64(in[0]-want)) > 1e-6 {
			t.Errorf("%s: process_in(1) = %v, want %v", f.Name, in[0], want)
		}
		back := f.processOut(in)
		if d := maxDiff(back, z); d > 1e-6 {
			t.Errorf("%s: round trip off by %g", f.Name, d)
		}
	}
}

// TestPreviewFrames: Latent2RGB colours, JPEG frames, and the throttle (first step
// always, then at most one frame per interval).
func TestPreviewFrames(t *testing.T) {
	shape := [4]int{1, 4, 2, 3}
	zero := make([]float32, 24)
	img, err := PreviewImage(SDXLLatent, zero, shape)
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != 3 || b.Dy() != 2 {
		t.Fatalf("preview %v, want 3x2", b)
	}
	// SDXL's bias (0.1084, −0.0175, −0.0011) on a zero latent: ((b+1)/2)·255 truncated.
	if p := img.RGBAAt(0, 0); p.R != 141 || p.G != 125 || p.B != 127 {
		t.Fatalf("pixel %v, want (141, 125, 127)", p)
	}
	one := make([]float32, 24)
	for i := 0; i < 6; i++ {
		one[i] = 1 // channel 0 only
	}
	img, _ = PreviewImage(SD15Latent, one, shape)
	// SD15 channel 0 → (0.3512, 0.2297, 0.3227).
	if p := img.RGBAAt(1, 1); p.R != 172 || p.G != 156 { // ⌊1.3512/2·255⌋, ⌊1.2297/2·255⌋
		t.Fatalf("pixel %v", p)
	}
	if _, err := PreviewImage(SD15Latent, make([]float32, 16*4), [4]int{1, 16, 2, 2}); err == nil {
		t.Fatal("16-channel latent with SD15 factors: no error")
	}
	big, err := PreviewImage(SD15Latent, make([]float32, 4*1030*10), [4]int{1, 4, 10, 1030})
	if err != nil || big.Bounds().Dx() > MaxPreviewSize {
		t.Fatalf("large preview %v, %v", big.Bounds(), err)
	}

	var frames [][]byte
	now := time.Unix(0, 0)
	p := &Previewer{Format: SD15Latent, Interval: 250 * time.Millisecond, Send: func(b []byte) { frames = append(frames, b) },
		Now: func() time.Time { return now }}
	for i := 0; i < 10; i++ {
		if err := p.Step(one, shape); err != nil {
			t.Fatal(err)
		}
		now = now.Add(100 * time.Millisecond)
	}
	// Steps at 0, 0.1, …, 0.9 s: frames at 0, 0.3, 0.6, 0.9.
	if len(frames) != 4 {
		t.Fatalf("%d frames, want 4", len(frames))
	}
	dec, err := jpeg.Decode(bytes.NewReader(frames[0]))
	if err != nil {
		t.Fatal(err)
	}
	if b := dec.Bounds(); b.Dx() != 3 || b.Dy() != 2 {
		t.Fatalf("decoded frame %v", b)
	}
	// A format without factors sends nothing and is no error.
	q := &Previewer{Format: LatentFormat{Name: "other"}, Send: func([]byte) { t.Fatal("frame sent") }}
	if err := q.Step(one, shape); err != nil {
		t.Fatal(err)
	}
}

// TestSamplePreviewDuringRun: previews produced from a real sampling run's steps.
func TestSamplePreviewDuringRun(t *testing.T) {
	tn := loadTiny(t)
	pos, neg := tn.encode(t, "a cat"), tn.encode(t, "a dog")
	var frames int
	now := time.Unix(0, 0)
	pv := &Previewer{Format: SD15Latent, Interval: time.Second, Send: func([]byte) { frames++ }, Now: func() time.Time { return now }}
	steps := 0
	p := KSamplerParams{Seed: 1, Steps: 6, CFG: 5, Sampler: "euler", Scheduler: "normal", Denoise: 1, StartStep: -1, LastStep: -1}
	_, err := KSample(context.Background(), tn.model, pos, neg, tn.latent(t, nil, 1, 4, 8, 8), p, func(step, total int, x0 []float32, shape [4]int) {
		steps++
		now = now.Add(400 * time.Millisecond)
		if err := pv.Step(x0, shape); err != nil {
			t.Fatal(err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	// Steps at 0.4 … 2.4 s with a 1 s throttle: frames at 0.4, 1.6 (0.4+1.2).
	if steps != 6 || frames != 2 {
		t.Fatalf("%d steps, %d frames; want 6 and 2", steps, frames)
	}
}

// TestEncodePromptsTwoEncoders: with an SDXL-like pair of encoders, text_g and text_l
// are encoded separately, the shorter one padded with empty-prompt windows, and the
// outputs joined along the feature axis, CLIP-L first.
func TestEncodePromptsTwoEncoders(t *testing.T) {
	tn := loadTiny(t)
	l := *tn.clip.Encoders[0]
	g := l
	g.Name = "g"
	pair := &CLIP{Runtime: tn.rt, Encoders: []*TextEncoder{&l, &g}}
	long := "masterpiece, best quality, a very detailed photograph of a red fox in a snowy forest, soft morning light, bokeh, 35mm, film grain, award winning, sharp focus, volumetric lighting, cinematic composition, muted colors, pine trees"
	long += ", " + long // two windows
	c, err := EncodePrompts(context.Background(), pair, map[string]string{"g": long, "l": "a fox"}, long)
	if err != nil {
		t.Fatal(err)
	}
	if s := c[0].Embedding.Shape(); s[1] != 154 || s[2] != 64 {
		t.Fatalf("embedding %v, want (1, 154, 64)", s)
	}
	lone, _ := EncodePrompt(context.Background(), tn.clip, "a fox")
	gone, _ := EncodePrompt(context.Background(), tn.clip, long)
	emb := vals64(t, c[0].Embedding)
	lv, gv := vals64(t, lone[0].Embedding), vals64(t, gone[0].Embedding)
	for tok := 0; tok < 77; tok++ {
		for d := 0; d < 32; d++ {
			if emb[tok*64+d] != lv[tok*32+d] || emb[tok*64+32+d] != gv[tok*32+d] {
				t.Fatalf("token %d dim %d: not [l | g]", tok, d)
			}
		}
	}
	if maxDiff(vals64(t, c[0].Pooled), vals64(t, gone[0].Pooled)) != 0 {
		t.Fatal("pooled output is not CLIP-G's")
	}
}

func vals64(t *testing.T, x *gpu.Tensor) []float32 {
	t.Helper()
	v, err := x.Float32()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// fakeADMModel is an SDXL-shaped Model whose UNet is replaced by the guider's forward
// hook: a label vector of 2816 and a 2048-wide context.
func fakeADMModel(t testing.TB, rt *gpu.Runtime) *Model {
	m := &Model{Runtime: rt, UNet: &unet.Model{}, Sampling: sampling.NewSD(sampling.EPS), Latent: SDXLLatent, ADM: true}
	w, err := rt.FromFloat32(make([]float32, 2816), 1, 2816)
	if err != nil {
		t.Fatal(err)
	}
	m.UNet.LabelEmbed.L1.Weight = w
	return m
}

// TestGuiderPassesY: an SDXL-style model gets one y row per batch item, the positive's
// and the negative's own (their pooled outputs differ), in the same batch as the
// contexts.
func TestGuiderPassesY(t *testing.T) {
	rt := newRT(t)
	m := fakeADMModel(t, rt)
	mk := func(v float32) Cond {
		p := make([]float32, 1280)
		for i := range p {
			p[i] = v
		}
		return NewCond(tensorOf(t, rt, make([]float32, 77*2048), 1, 77, 2048), tensorOf(t, rt, p, 1, 1280))
	}
	g := NewCFGGuider(m, Conditioning{mk(1)}, Conditioning{mk(-1)}, 7)
	calls := 0
	g.forward = func(ctx context.Context, in NetInputs) (*gpu.Tensor, error) {
		calls++
		if in.Y == nil || in.Y.Dim(0) != 4 || in.Y.Dim(1) != 2816 || in.Context.Dim(0) != 4 {
			t.Fatalf("y %v, context %v: want 4 rows each", in.Y, in.Context.Shape())
		}
		y, _ := in.Y.Float32()
		// Batch order is last entry first: the negative's two rows, then the positive's.
		if y[0] != -1 || y[2816] != -1 || y[2*2816] != 1 || y[3*2816] != 1 {
			t.Fatalf("y rows start %v %v %v %v", y[0], y[2816], y[2*2816], y[3*2816])
		}
		return rt.FromFloat32(make([]float32, in.X.Numel()), in.X.Shape()...)
	}
	noise := make([]float32, 2*4*8*8)
	if _, err := g.Sample(context.Background(), smp(t, "euler"), []float32{1, 0}, noise, make([]float32, len(noise)), [4]int{2, 4, 8, 8}, nil, 0, nil); err != nil {
		t.Fatal(err)
	}
	if calls != 1 {
		t.Fatalf("%d UNet calls, want 1", calls)
	}
}

// BenchmarkGuiderOverhead measures what the guider adds around the UNet per step (conds,
// batching, CFG, accumulation) at SDXL's 1024² latent with cond and uncond, the UNet
// replaced by a zero output: go test -bench GuiderOverhead ./diffusion/sd/
func BenchmarkGuiderOverhead(b *testing.B) {
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		b.Fatal(err)
	}
	base := fakeADMModel(b, rt)
	mk := func() Cond {
		e, _ := rt.FromFloat32(make([]float32, 77*2048), 1, 77, 2048)
		p, _ := rt.FromFloat32(make([]float32, 1280), 1, 1280)
		return NewCond(e, p)
	}
	// masked: a second positive entry weighted by a 1024² mask (resized once per run);
	// guidance: the APG and TCFG pre-CFG and CFGZeroStar and Mahiro post-CFG functions.
	mask := make([]float32, 1024*1024)
	for i := range mask {
		mask[i] = float32(i%1024) / 1024
	}
	masked := mk()
	masked.Mask, masked.MaskStrength = &CondMask{Data: mask, N: 1, H: 1024, W: 1024}, 1
	cases := []struct {
		name string
		pos  Conditioning
		m    *Model
	}{
		{"plain", Conditioning{mk()}, base},
		{"masked", Conditioning{mk(), masked}, base},
		{"guidance", Conditioning{mk()}, base.WithPreCFG(NewAPG(0.5, 5, 0.3), false).WithPreCFG(TCFG{}, false).
			WithPostCFG(CFGZeroStar{}).WithPostCFG(Mahiro{})},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			g := NewCFGGuider(tc.m, tc.pos, Conditioning{mk()}, 7)
			g.forward = func(ctx context.Context, in NetInputs) (*gpu.Tensor, error) {
				return rt.Zeros(gpu.F32, in.X.Shape()...)
			}
			shape := [4]int{1, 4, 128, 128}
			p, err := g.prepare(128, 128)
			if err != nil {
				b.Fatal(err)
			}
			d := &denoiser{g: g, p: p, shape: shape}
			x := make([]float32, 4*128*128)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, _, err := d.Denoise(context.Background(), x, 5); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
