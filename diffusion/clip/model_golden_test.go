package clip

import (
	"fmt"
	"regexp"
	"strconv"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/internal/testenv"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

var (
	rawLayerRE  = regexp.MustCompile(`^out\.raw\.layer(\d+)_unnormed$`)
	rawHiddenRE = regexp.MustCompile(`^out\.raw\.hidden_m(\d+)_(normed|unnormed)$`)
	encodedRE   = regexp.MustCompile(`^out\.(.+)\.(cond|pooled)(?:_skip(\d+))?$`)
)

// TestGoldenCLIP runs every case of golden/clip: the raw transformer outputs per layer,
// pooled and projected, and ComfyUI's encode_from_tokens with prompt weights and clip
// skip, within each case's tolerance. Every out. tensor of the case is checked; the
// family README's names say what each is (layer<i>, hidden_m<k> = layer −k,
// <prompt>.cond_skip<k> = CLIPSetLastLayer −k).
func TestGoldenCLIP(t *testing.T) {
	rt, err := gpu.New(gpu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range testenv.GoldenCLIPs(t) {
		t.Run(c.Name, func(t *testing.T) {
			f, err := tensorfile.Open(c.Path())
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			src := statedict.NewFileSource(rt, f)
			model := &TextModel{Heads: c.Heads, Activation: c.Activation, EOS: c.EOS}
			rep, err := statedict.Bind(rt, src, c.Prefix, model)
			if err != nil {
				t.Fatal(err)
			}
			if len(model.Layers) != c.Layers {
				t.Fatalf("%d layers bound, config says %d", len(model.Layers), c.Layers)
			}
			if len(rep.Unused) > 0 {
				t.Errorf("unused keys: %v", rep.Unused)
			}
			// The pooled output's projection, where the file holds one (beside the text
			// model, as in SD1.5 checkpoints that carry it).
			var proj *gpu.Tensor
			if pre, err := c.WeightPrefix("text_projection.weight"); err == nil {
				if proj, err = src.Tensor(pre + "text_projection.weight"); err != nil {
					t.Fatal(err)
				}
			}
			check := func(name string, got *gpu.Tensor) {
				t.Helper()
				g, err := got.Float32()
				if err != nil {
					t.Fatal(err)
				}
				testenv.Close(t, name, g, floatsOf(t, f, name), c.Tolerance)
			}
			windowsOf := func(p string) [][]Token {
				t.Helper()
				spec, err := c.Tensor("in.tokens." + p)
				if err != nil {
					t.Fatal(err)
				}
				if len(spec.Shape) != 2 {
					t.Fatal(c.FieldError("io_tensors", "in.tokens.%s has shape %v, want (windows, length)", p, spec.Shape))
				}
				size := spec.Shape[1]
				ids := readInts(t, f, "in.tokens."+p)
				var ws []float64
				if _, ok := c.IO["in.weights."+p]; ok {
					ws = readF64(t, f, "in.weights."+p)
				}
				var out [][]Token
				for w := 0; w < len(ids)/size; w++ {
					win := make([]Token, size)
					for i := range win {
						win[i] = Token{ID: ids[w*size+i], Weight: 1}
						if ws != nil {
							win[i].Weight = ws[w*size+i]
						}
					}
					out = append(out, win)
				}
				return out
			}
			forward := func(layer int, norm bool) *Output {
				t.Helper()
				o, err := model.Forward(rt, []Input{Input(windowsOf("raw")[0])}, layer, norm)
				if err != nil {
					t.Fatal(err)
				}
				return o
			}
			encoded := map[string]*Encoded{}
			encode := func(p string, skip int) *Encoded {
				t.Helper()
				key := fmt.Sprint(p, "/", skip)
				if e, ok := encoded[key]; ok {
					return e
				}
				enc := &Encoder{Model: model, NormHidden: true, Layer: -skip, Start: c.Start, End: c.End, Pad: c.Pad}
				e, err := enc.Encode(rt, windowsOf(p))
				if err != nil {
					t.Fatal(err)
				}
				encoded[key] = e
				return e
			}
			outs := c.Tensors("out.")
			if len(outs) == 0 {
				t.Fatal(c.FieldError("io_tensors", "lists no out. tensor"))
			}
			for _, name := range outs {
				if m := rawLayerRE.FindStringSubmatch(name); m != nil {
					i, _ := strconv.Atoi(m[1])
					o := forward(i, false)
					check(name, o.Hidden)
					o.Release()
					continue
				}
				if m := rawHiddenRE.FindStringSubmatch(name); m != nil {
					k, _ := strconv.Atoi(m[1])
					o := forward(-k, m[2] == "normed")
					check(name, o.Hidden)
					o.Release()
					continue
				}
				switch name {
				case "out.raw.last_hidden", "out.raw.pooled", "out.raw.pooled_projected":
					o := forward(NoHidden, false)
					switch name {
					case "out.raw.last_hidden":
						check(name, o.Last)
					case "out.raw.pooled":
						check(name, o.Pooled)
					default:
						if proj == nil {
							t.Fatalf("%s: the file holds no single text_projection.weight", name)
						}
						pp, err := gpu.Linear(rt, o.Pooled, proj, nil)
						if err != nil {
							t.Fatal(err)
						}
						check(name, pp)
						pp.Release()
					}
					o.Release()
					continue
				}
				m := encodedRE.FindStringSubmatch(name)
				if m == nil || !hasPrompt(c.Prompts, m[1]) {
					t.Fatal(c.FieldError("io_tensors", "no rule for %s (not a raw output, nor the encoding of a prompt the case lists)", name))
				}
				skip := 0
				if m[3] != "" {
					skip, _ = strconv.Atoi(m[3])
				}
				e := encode(m[1], skip)
				if m[2] == "cond" {
					check(name, e.Cond)
				} else {
					check(name, e.Pooled)
				}
			}
			for _, e := range encoded {
				e.Cond.Release()
				e.Pooled.Release()
			}
		})
	}
}

// hasPrompt reports whether the case lists a prompt named p (an empty prompt text is a
// prompt too).
func hasPrompt(prompts map[string]string, p string) bool {
	_, ok := prompts[p]
	return ok
}

func floatsOf(t *testing.T, f *tensorfile.File, name string) []float32 {
	t.Helper()
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
