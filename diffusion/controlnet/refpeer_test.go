package controlnet

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/lora"
	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/diffusion/unet"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights/safetensors"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// refFixture is ComfyUI's side of the reference runs (tools/refpeer/controlnet_ref.py).
const refFixture = "testdata/refpeer.safetensors"

// pattern is the script's computed image: 0.5 + 0.5·sin(0.0137·k·i + k) over the flat
// index, in float64, then float32.
func pattern(n, k int) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = float32(0.5 + 0.5*math.Sin(float64(i)*0.0137*float64(k)+float64(k)))
	}
	return out
}

// refEnv holds the fixture, the runtime and the models written for this test run.
type refEnv struct {
	t   *testing.T
	rt  *gpu.Runtime
	fx  *safetensors.File
	dir string
}

func newRefEnv(t *testing.T, names ...string) *refEnv {
	t.Helper()
	fx, err := safetensors.Open(refFixture)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fx.Close() })
	var sums map[string]string
	if err := json.Unmarshal([]byte(fx.Metadata()["models"]), &sums); err != nil {
		t.Fatalf("fixture metadata: %v", err)
	}
	e := &refEnv{t: t, rt: newRuntime(t), fx: fx, dir: t.TempDir()}
	for _, m := range refModels() {
		if !containsName(names, m.file) {
			continue
		}
		_, sum := writeRefModel(t, e.dir, m)
		if sums[m.file] != sum {
			t.Fatalf("%s: sha256 %s, the reference was made from %s: rerun tools/refpeer/controlnet_ref.py", m.file, sum, sums[m.file])
		}
	}
	return e
}

func containsName(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func newRuntime(t testing.TB) *gpu.Runtime {
	t.Helper()
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return rt
}

func (e *refEnv) path(f string) string { return filepath.Join(e.dir, f) }

// data returns a fixture tensor's values and shape.
func (e *refEnv) data(name string) ([]float32, []int) {
	e.t.Helper()
	tn, err := e.fx.Tensor(name)
	if err != nil {
		e.t.Fatal(err)
	}
	v, err := tn.Float32()
	if err != nil {
		e.t.Fatal(err)
	}
	shape := make([]int, len(tn.Shape))
	for i, d := range tn.Shape {
		shape[i] = int(d)
	}
	return v, shape
}

func (e *refEnv) tensor(name string) *gpu.Tensor {
	e.t.Helper()
	v, s := e.data(name)
	t, err := e.rt.FromFloat32(v, s...)
	if err != nil {
		e.t.Fatal(err)
	}
	return t
}

// compare checks got against the fixture's out.name: max |Δ| within tol·(1 + max
// |want|), and reports the error and the SNR in dB.
func (e *refEnv) compare(name string, got []float32, tol float64) {
	e.t.Helper()
	want, _ := e.data("out." + name)
	if len(got) != len(want) {
		e.t.Errorf("%s: %d values, want %d", name, len(got), len(want))
		return
	}
	var maxd, maxw, sig, noise float64
	for i := range want {
		d := math.Abs(float64(got[i]) - float64(want[i]))
		if math.IsNaN(d) {
			d = math.Inf(1)
		}
		maxd = max(maxd, d)
		maxw = max(maxw, math.Abs(float64(want[i])))
		sig += float64(want[i]) * float64(want[i])
		noise += d * d
	}
	snr := 10 * math.Log10(sig/max(noise, 1e-300))
	psnr := 20 * math.Log10(maxw/math.Sqrt(max(noise, 1e-300)/float64(len(want))))
	e.t.Logf("%s: max |Δ| %.3g (max |want| %.3g), PSNR %.1f dB, SNR %.1f dB", name, maxd, maxw, psnr, snr)
	if maxd > tol*(1+maxw) {
		e.t.Errorf("%s: max |Δ| %.3g exceeds %.3g", name, maxd, tol*(1+maxw))
	}
}

// hint is a computed NHWC image as ControlNetApply would take it (movedim to NCHW).
func hintNHWC(n, h, w, c, k int) Hint {
	px := pattern(n*h*w*c, k)
	out := make([]float32, len(px))
	for b := 0; b < n; b++ {
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				for ch := 0; ch < c; ch++ {
					out[((b*c+ch)*h+y)*w+x] = px[((b*h+y)*w+x)*c+ch]
				}
			}
		}
	}
	return Hint{Data: out, N: n, C: c, H: h, W: w}
}

func (e *refEnv) loadUNet(file string) *sd.Model {
	e.t.Helper()
	ck, err := sd.LoadCheckpoint(e.rt, e.path(file), sd.LoadOptions{UNetHeads: unet.Heads{Dim: 64}, SkipCLIP: true, SkipVAE: true})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { ck.Close() })
	return ck.Model
}

func (e *refEnv) loadNet(file string, opts LoadOptions) *Net {
	e.t.Helper()
	n, err := Load(e.rt, e.path(file), opts)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { n.Close() })
	return n
}

func (e *refEnv) sample(m *sd.Model, pos, neg sd.Conditioning) []float32 {
	e.t.Helper()
	return e.sampleSize(m, pos, neg, 8, 8)
}

func (e *refEnv) sampleSize(m *sd.Model, pos, neg sd.Conditioning, h, w int) []float32 {
	e.t.Helper()
	z, err := e.rt.Zeros(gpu.F32, 1, 4, h, w)
	if err != nil {
		e.t.Fatal(err)
	}
	out, err := sd.KSample(context.Background(), m, pos, neg, &sd.Latent{Samples: z},
		sd.KSamplerParams{Seed: 7, Steps: 4, CFG: 4, Sampler: "euler", Scheduler: "normal", Denoise: 1, StartStep: -1, LastStep: -1}, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	v, err := out.Samples.Float32()
	if err != nil {
		e.t.Fatal(err)
	}
	return v
}

func apply(t *testing.T, n *Net, h Hint, strength, start, end float64, prev sd.Control) *Applied {
	t.Helper()
	a, err := Apply(n, h, strength, start, end, prev)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestAgainstComfyUISampling runs ComfyUI's KSampler cases of the reference with
// ControlNets, a control-lora, a diff ControlNet and a T2I-Adapter chained after a
// ControlNet, on the tiny SD1.5-layout UNet, and compares the final latents.
func TestAgainstComfyUISampling(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 40 MB of models and samples 6 runs")
	}
	e := newRefEnv(t, "unet.safetensors", "controlnet.safetensors", "control_lora.safetensors", "controlnet_diff.safetensors", "t2i_full.safetensors", "unet_lora.safetensors")
	m := e.loadUNet("unet.safetensors")
	posT, negT := e.tensor("in.pos"), e.tensor("in.neg")
	pos := func(f func(*sd.Cond)) sd.Conditioning {
		c := sd.NewCond(posT, nil)
		if f != nil {
			f(&c)
		}
		return sd.Conditioning{c}
	}
	neg := func(f func(*sd.Cond)) sd.Conditioning {
		c := sd.NewCond(negT, nil)
		if f != nil {
			f(&c)
		}
		return sd.Conditioning{c}
	}
	hint := hintNHWC(1, 64, 64, 3, 1)
	hintOdd := hintNHWC(1, 44, 52, 3, 2)
	cnet := e.loadNet("controlnet.safetensors", LoadOptions{})
	const tol = 2e-4
	// Every controlled run must differ from the plain one, or the comparison proves
	// nothing about the controls.
	plain, _ := e.data("out.plain")
	for _, c := range []string{"cnet_adv", "cnet_old", "chain_cnet_t2i", "control_lora", "diff", "lora_plain", "control_lora_on_lora", "diff_on_lora"} {
		v, _ := e.data("out." + c)
		var d, n float64
		for i := range v {
			d += math.Abs(float64(v[i] - plain[i]))
			n += math.Abs(float64(plain[i]))
		}
		if d < 0.05*n {
			t.Errorf("%s differs from the plain run by %.3g%% only", c, 100*d/n)
		}
	}

	e.compare("plain", e.sample(m, pos(nil), neg(nil)), tol)

	adv := apply(t, cnet, hint, 0.8, 0.1, 0.8, nil)
	withCtl := func(a sd.Control, toUncond bool) func(*sd.Cond) {
		return func(c *sd.Cond) { c.Control, c.ControlApplyToUncond = a, toUncond }
	}
	e.compare("cnet_adv", e.sample(m, pos(withCtl(adv, false)), neg(withCtl(adv, false))), tol)
	e.compare("cnet_odd", e.sampleSize(m, pos(withCtl(adv, false)), neg(withCtl(adv, false)), 12, 7), tol)

	old := apply(t, cnet, hintOdd, 0.6, 0, 1, nil)
	e.compare("cnet_old", e.sample(m, pos(withCtl(old, true)), neg(nil)), tol)

	t2i := e.loadNet("t2i_full.safetensors", LoadOptions{})
	chained := apply(t, t2i, hint, 1.2, 0, 1, old)
	fresh := apply(t, t2i, hint, 1.2, 0, 1, nil)
	e.compare("chain_cnet_t2i", e.sample(m, pos(withCtl(chained, false)), neg(withCtl(fresh, false))), tol)

	clora := apply(t, e.loadNet("control_lora.safetensors", LoadOptions{}), hint, 1, 0, 1, nil)
	e.compare("control_lora", e.sample(m, pos(withCtl(clora, false)), neg(withCtl(clora, false))), tol)

	// The same control-lora on the model with a LoRA at 0.7 (LoraLoaderModelOnly), the
	// LoRA merged and added at run time: ComfyUI builds the control-lora on the patched
	// weights. Merging rounds the patched weights to the file's F16 where ComfyUI keeps
	// its float32 copy (codex/lora.md), which alone moves the plain LoRA run by ~8e-4 of
	// the latents' range; run-time patches keep the base tolerance.
	lf, err := lora.Open(e.rt, e.path("unet_lora.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	for _, c := range []struct {
		mode lora.Mode
		tol  float64
	}{{lora.Merge, 2e-3}, {lora.Runtime, tol}} {
		ml, _, err := sd.LoadLoRA(m, nil, lf, 0.7, 0, sd.LoRAOptions{Mode: c.mode})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("LoRA %s:", c.mode)
		e.compare("lora_plain", e.sample(ml, pos(nil), neg(nil)), c.tol)
		e.compare("control_lora_on_lora", e.sample(ml, pos(withCtl(clora, false)), neg(withCtl(clora, false))), c.tol)
	}

	diff := apply(t, e.loadNet("controlnet_diff.safetensors", LoadOptions{Model: m}), hint, 0.9, 0, 1, nil)
	e.compare("diff", e.sample(m, pos(withCtl(diff, false)), neg(withCtl(diff, false))), tol)
	// The diff ControlNet loaded with the LoRA model (ComfyUI patches the model before
	// it adds its weights), run-time patches.
	ml, _, err := sd.LoadLoRA(m, nil, lf, 0.7, 0, sd.LoRAOptions{Mode: lora.Runtime})
	if err != nil {
		t.Fatal(err)
	}
	diffL := apply(t, e.loadNet("controlnet_diff.safetensors", LoadOptions{Model: ml}), hint, 0.9, 0, 1, nil)
	e.compare("diff_on_lora", e.sample(ml, pos(withCtl(diffL, false)), neg(withCtl(diffL, false))), tol)
}

// TestAgainstComfyUIAdapters compares the features of three T2I-Adapters (conv
// downsampling with 1×1 kernels on a one-channel hint; SDXL; light) with ComfyUI's
// Adapter and Adapter_light classes on the same weights and hints.
func TestAgainstComfyUIAdapters(t *testing.T) {
	e := newRefEnv(t, "t2i_full_conv1.safetensors", "t2i_xl.safetensors", "t2i_light.safetensors")
	hint3, err := e.rt.FromFloat32(pattern(3*64*64, 4), 1, 3, 64, 64)
	if err != nil {
		t.Fatal(err)
	}
	grey, err := channelMean(e.rt, hint3)
	if err != nil {
		t.Fatal(err)
	}
	hintXL, err := e.rt.FromFloat32(pattern(64*64, 5), 1, 1, 64, 64)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		file, prefix string
		hint         *gpu.Tensor
		xl           bool
	}{
		{"t2i_full_conv1.safetensors", "t2i_conv1", grey, false},
		{"t2i_xl.safetensors", "t2i_xl", hintXL, true},
		{"t2i_light.safetensors", "t2i_light", hint3, false},
	} {
		t.Run(tc.prefix, func(t *testing.T) {
			n := e.loadNet(tc.file, LoadOptions{})
			if n.Adapter() == nil || n.Adapter().XL != tc.xl {
				t.Fatalf("loaded %s as %s (adapter %v)", tc.file, n.Kind, n.Adapter())
			}
			res, err := n.Adapter().features(context.Background(), e.rt, tc.hint)
			if err != nil {
				t.Fatal(err)
			}
			defer res.release()
			checked := 0
			for key, list := range map[string][]*gpu.Tensor{"input": res.input, "middle": res.middle} {
				for i, f := range list {
					name := fmt.Sprintf("%s.%s.%d", tc.prefix, key, i)
					if _, err := e.fx.Tensor("out." + name); err != nil {
						if f != nil {
							t.Errorf("%s: forgeflow has a feature ComfyUI has not", name)
						}
						continue
					}
					if f == nil {
						t.Errorf("%s: ComfyUI has a feature forgeflow has not", name)
						continue
					}
					v, _ := f.Float32()
					e.compare(name, v, 1e-5)
					checked++
				}
			}
			if checked != 4 {
				t.Errorf("%d features compared, want 4", checked)
			}
		})
	}
}

// TestAgainstComfyUIUnion compares a union ControlNet's residuals (auto and the canny
// type) with ComfyUI's cldm.ControlNet, loaded from the file in the diffusers layout
// as union ControlNets ship (ComfyUI reads union parts only there).
func TestAgainstComfyUIUnion(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a 36 MB model")
	}
	e := newRefEnv(t, "union.safetensors")
	dpath := e.path("union_diffusers.safetensors")
	writeDiffusers(t, e.path("union.safetensors"), dpath, refUnionUNet.ResBlocks)
	net := e.loadNet("union_diffusers.safetensors", LoadOptions{})
	if net.Model() == nil || net.Model().Union == nil || net.Model().Union.NumTypes() != 8 {
		t.Fatalf("union_diffusers.safetensors loaded as %s without its union parts", net.Kind)
	}
	x, ts, ctx := e.tensor("in.x"), e.tensor("in.t"), e.tensor("in.ctx")
	hint, err := e.rt.FromFloat32(pattern(2*3*16*16, 3), 2, 3, 16, 16)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		types []int
	}{{"union_auto", nil}, {"union_canny", []int{3}}} {
		t.Run(tc.name, func(t *testing.T) {
			m := net.WithControlType(tc.types).Model()
			g, err := m.guidedHint(e.rt, hint)
			if err != nil {
				t.Fatal(err)
			}
			if len(tc.types) > 0 {
				if g, err = then(g, func(x *gpu.Tensor) (*gpu.Tensor, error) { return m.Union.merge(e.rt, x, tc.types[0]) }); err != nil {
					t.Fatal(err)
				}
			}
			defer g.Release()
			emb, err := m.Union.embedding(e.rt, tc.types)
			if err != nil {
				t.Fatal(err)
			}
			emb2, err := broadcastBatch(e.rt, emb, 2, 1)
			emb.Release()
			if err != nil {
				t.Fatal(err)
			}
			defer emb2.Release()
			res, err := m.forward(context.Background(), e.rt, unet.Inputs{X: x, Timesteps: ts, Context: ctx}, g, emb2)
			if err != nil {
				t.Fatal(err)
			}
			defer res.release()
			for key, list := range map[string][]*gpu.Tensor{"output": res.output, "middle": res.middle} {
				for i, f := range list {
					v, _ := f.Float32()
					e.compare(fmt.Sprintf("%s.%s.%d", tc.name, key, i), v, 1e-4)
				}
			}
		})
	}
}

// writeDiffusers rewrites a cldm-layout ControlNet under diffusers names.
func writeDiffusers(t testing.TB, from, to string, perLevel int) {
	t.Helper()
	f, err := tensorfile.Open(from, tensorfile.Safetensors)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var es []safetensors.Entry
	for _, in := range f.Tensors() {
		tn, err := f.Tensor(in.Name)
		if err != nil {
			t.Fatal(err)
		}
		es = append(es, safetensors.Entry{Name: ldmToDiffusers(in.Name, perLevel), DType: in.DType, Shape: in.Shape, Data: tn.Data})
	}
	safetensors.SortEntries(es)
	out, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	if err := safetensors.Write(out, es, nil); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// ldmToDiffusers is the inverse of diffusersToLDM, written the other way round: the
// diffusers ControlNetModel names of a cldm key.
func ldmToDiffusers(k string, perLevel int) string {
	for _, r := range [][2]string{
		{"input_blocks.0.0.", "conv_in."}, {"time_embed.0.", "time_embedding.linear_1."},
		{"time_embed.2.", "time_embedding.linear_2."}, {"label_emb.0.0.", "add_embedding.linear_1."},
		{"label_emb.0.2.", "add_embedding.linear_2."}, {"middle_block_out.0.", "controlnet_mid_block."},
		{"input_hint_block.0.", "controlnet_cond_embedding.conv_in."},
		{"input_hint_block.14.", "controlnet_cond_embedding.conv_out."},
		{"middle_block.1.", "mid_block.attentions.0."},
	} {
		if rest, ok := strings.CutPrefix(k, r[0]); ok {
			return r[1] + rest
		}
	}
	resnet := func(rest string) string {
		for _, r := range resnetNames {
			if t, ok := strings.CutPrefix(rest, r[1]); ok {
				return r[0] + t
			}
		}
		return rest
	}
	var i, j int
	var rest string
	switch {
	case scan(k, "middle_block.%d.", &i, &rest):
		return fmt.Sprintf("mid_block.resnets.%d.%s", i/2, resnet(rest))
	case scan(k, "input_hint_block.%d.", &i, &rest):
		return fmt.Sprintf("controlnet_cond_embedding.blocks.%d.%s", i/2-1, rest)
	case scan(k, "zero_convs.%d.0.", &i, &rest):
		return fmt.Sprintf("controlnet_down_blocks.%d.%s", i, rest)
	case scan2(k, "input_blocks.%d.%d.", &i, &j, &rest):
		level, b := (i-1)/(perLevel+1), (i-1)%(perLevel+1)
		switch {
		case b == perLevel:
			return fmt.Sprintf("down_blocks.%d.downsamplers.0.conv.%s", level, strings.TrimPrefix(rest, "op."))
		case j == 0:
			return fmt.Sprintf("down_blocks.%d.resnets.%d.%s", level, b, resnet(rest))
		default:
			return fmt.Sprintf("down_blocks.%d.attentions.%d.%s", level, b, rest)
		}
	}
	return strings.Replace(k, ".attn.in_proj.", ".attn.in_proj_", 1)
}

func scan(k, format string, i *int, rest *string) bool {
	var n int
	if _, err := fmt.Sscanf(k, format, &n); err != nil {
		return false
	}
	p := fmt.Sprintf(format, n)
	if !strings.HasPrefix(k, p) {
		return false
	}
	*i, *rest = n, k[len(p):]
	return true
}

func scan2(k, format string, i, j *int, rest *string) bool {
	var a, b int
	if _, err := fmt.Sscanf(k, format, &a, &b); err != nil {
		return false
	}
	p := fmt.Sprintf(format, a, b)
	if !strings.HasPrefix(k, p) {
		return false
	}
	*i, *j, *rest = a, b, k[len(p):]
	return true
}
