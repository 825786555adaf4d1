package sd

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/clip"
	"github.com/forgeflow/forgeflow/diffusion/sampling"
	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/internal/dtype"
	"github.com/forgeflow/forgeflow/weights/detect"
	"github.com/forgeflow/forgeflow/weights/folders"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

// TestOpenCLIPMatchesHF writes one OpenCLIP text tower twice — in OpenCLIP's layout
// (fused in_proj, (in, out) text_projection) and converted by hand to the transformers
// layout — and checks that both load into encoders with identical outputs.
func TestOpenCLIPMatchesHF(t *testing.T) {
	rt := ckRuntime(t)
	dir := t.TempDir()
	oc := tinySD2(31, false)
	ocTensors, err := oc.Tensors()
	if err != nil {
		t.Fatal(err)
	}
	var hf []valueTensor
	var proj valueTensor
	for _, rtn := range ocTensors {
		ts := valueTensor{name: rtn.Name, shape: rtn.Shape, vals: rtn.Values(oc.Seed)}
		name, ok := strings.CutPrefix(ts.name, "cond_stage_model.model.")
		if !ok {
			hf = append(hf, ts)
			continue
		}
		const p = "cond_stage_model.model.hf."
		rename := map[string]string{
			"token_embedding.weight": "embeddings.token_embedding.weight",
			"positional_embedding":   "embeddings.position_embedding.weight",
			"ln_final.weight":        "final_layer_norm.weight", "ln_final.bias": "final_layer_norm.bias",
		}
		switch {
		case rename[name] != "":
			ts.name = p + rename[name]
			hf = append(hf, ts)
		case name == "text_projection":
			proj = ts
		case name == "logit_scale":
		default:
			var layer int
			if _, err := fmt.Sscanf(name, "transformer.resblocks.%d.", &layer); err != nil {
				t.Fatalf("unexpected key %s", name)
			}
			rest := strings.TrimPrefix(name, fmt.Sprintf("transformer.resblocks.%d.", layer))
			to := fmt.Sprintf("%sencoder.layers.%d.", p, layer)
			switch rest {
			case "attn.in_proj_weight", "attn.in_proj_bias":
				per := len(ts.vals) / 3
				kind := strings.TrimPrefix(rest, "attn.in_proj_")
				for j, q := range []string{"q_proj", "k_proj", "v_proj"} {
					shape := slices.Clone(ts.shape)
					shape[0] /= 3
					hf = append(hf, valueTensor{name: to + "self_attn." + q + "." + kind, shape: shape, vals: ts.vals[j*per : (j+1)*per]})
				}
			default:
				r := strings.NewReplacer("ln_1.", "layer_norm1.", "ln_2.", "layer_norm2.", "attn.out_proj.", "self_attn.out_proj.", "mlp.c_fc.", "mlp.fc1.", "mlp.c_proj.", "mlp.fc2.")
				ts.name = to + r.Replace(rest)
				hf = append(hf, ts)
			}
		}
	}
	// text_projection (in, out) → a Linear weight (out, in).
	in, out := proj.shape[0], proj.shape[1]
	tv := make([]float32, in*out)
	for i := 0; i < in; i++ {
		for o := 0; o < out; o++ {
			tv[o*in+i] = proj.vals[i*out+o]
		}
	}
	hf = append(hf, valueTensor{name: "cond_stage_model.model.hf.text_projection.weight", shape: []int{out, in}, vals: tv})

	ocPath, hfPath := filepath.Join(dir, "oc.safetensors"), filepath.Join(dir, "hf.safetensors")
	writeSpec(t, ocPath, oc)
	writeValues(t, hfPath, hf)
	bpe, err := clip.LoadBPE(writeTinyVocab(t, filepath.Join(dir, "vocab")))
	if err != nil {
		t.Fatal(err)
	}
	ckOC, err := LoadCheckpoint(rt, ocPath, LoadOptions{Vocab: bpe, SkipModel: true, SkipVAE: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ckOC.Close()
	f, err := openFile(hfPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	teHF, err := bindTextModel(rt, statedict.NewFileSource(rt, f), "cond_stage_model.model.hf.", roleSD2H, "cond_stage_model.model.hf.text_projection.weight", LoadOptions{Vocab: bpe})
	if err != nil {
		t.Fatal(err)
	}
	toks, err := ckTokens(ckOC.CLIP, []int{5, 17, 300, 9})
	if err != nil {
		t.Fatal(err)
	}
	a, err := ckOC.CLIP.EncodeTokens(context.Background(), toks)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Release()
	b, err := (&CLIP{Runtime: rt, Encoders: []*TextEncoder{teHF}}).EncodeTokens(context.Background(), toks)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Release()
	for _, pair := range [][2]*Encoded{{a, b}} {
		for name, x := range map[string][2][]float32{"cond": {ckVals(pair[0].Cond), ckVals(pair[1].Cond)}, "pooled": {ckVals(pair[0].Pooled), ckVals(pair[1].Pooled)}} {
			if !slices.Equal(x[0], x[1]) {
				t.Errorf("%s differs between the OpenCLIP and transformers layouts", name)
			}
		}
	}
	if len(ckVals(a.Pooled)) != tinyProj {
		t.Errorf("pooled width %d, want the projection's %d", len(ckVals(a.Pooled)), tinyProj)
	}
}

// ckTokens makes one window per encoder from raw ids: start, ids, end, padding.
func ckTokens(c *CLIP, ids []int) (Tokens, error) {
	out := Tokens{}
	for _, te := range c.Encoders {
		e := te.Encoder
		win := make([]clip.Token, 0, 77)
		win = append(win, clip.Token{ID: e.Start, Weight: 1})
		for _, id := range ids {
			win = append(win, clip.Token{ID: id, Weight: 1})
		}
		win = append(win, clip.Token{ID: e.End, Weight: 1})
		for len(win) < 77 {
			win = append(win, clip.Token{ID: e.Pad, Weight: 1})
		}
		out[te.Name] = [][]clip.Token{win}
	}
	return out, nil
}

func ckVals(x interface{ Float32() ([]float32, error) }) []float32 {
	v, _ := x.Float32()
	return v
}

// TestSaveCheckpointRoundTrip saves a loaded checkpoint and checks that the file holds
// every tensor of the source under the same name with the same bytes, that it loads
// back as the same family, and carries ComfyUI's metadata.
func TestSaveCheckpointRoundTrip(t *testing.T) {
	rt := ckRuntime(t)
	dir := t.TempDir()
	tests := []struct {
		name      string
		build     RandomSpec
		predict   string
		arch      string
		vPredFlag bool
	}{
		{"sd1", tinySD1(41), "epsilon", "", false},
		{"sd2_v", tinySD2(42, true), "v", "", true},
		{"sdxl", tinySDXL(43), "epsilon", "stable-diffusion-xl-v1-base", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := filepath.Join(dir, tc.name+".safetensors")
			writeSpec(t, src, tc.build)
			ck, err := LoadCheckpoint(rt, src, LoadOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer ck.Close()
			var buf bytes.Buffer
			if err := SaveCheckpoint(&buf, ck.Model, ck.CLIP, ck.VAE, "ComfyUI 1", map[string]string{"prompt": "{}"}); err != nil {
				t.Fatal(err)
			}
			saved := filepath.Join(dir, tc.name+"_saved.safetensors")
			if err := os.WriteFile(saved, buf.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			a, err := safetensors.Open(src)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			b, err := safetensors.Open(saved)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			for _, info := range a.Tensors() {
				ta, _ := a.Tensor(info.Name)
				tb, err := b.Tensor(info.Name)
				if err != nil {
					t.Fatalf("saved file lacks %s", info.Name)
				}
				if tb.DType != ta.DType || !slices.Equal(tb.Shape, ta.Shape) || !bytes.Equal(tb.Data, ta.Data) {
					t.Fatalf("%s: saved %s%v differs from the source %s%v", info.Name, tb.DType, tb.Shape, ta.DType, ta.Shape)
				}
			}
			_, hasV := b.Info("v_pred")
			if hasV != tc.vPredFlag {
				t.Errorf("v_pred marker present %v, want %v", hasV, tc.vPredFlag)
			}
			md := b.Metadata()
			if md["modelspec.predict_key"] != tc.predict || md["modelspec.architecture"] != tc.arch || md["prompt"] != "{}" {
				t.Errorf("metadata %v", md)
			}
			back, err := LoadCheckpoint(rt, saved, LoadOptions{SkipModel: false})
			if err != nil {
				t.Fatal(err)
			}
			defer back.Close()
			if back.Family != ck.Family || back.Model.Sampling.Prediction() != ck.Model.Sampling.Prediction() {
				t.Errorf("reloaded as %s %v, saved %s %v", back.Family, back.Model.Sampling.Prediction(), ck.Family, ck.Model.Sampling.Prediction())
			}
		})
	}
	m := &Model{Sampling: sampling.NewSD(sampling.EPS)}
	if err := SaveCheckpoint(&bytes.Buffer{}, m, nil, nil, "", nil); err == nil {
		t.Error("a model without file weights was saved")
	}
}

func TestVocabSearch(t *testing.T) {
	base := t.TempDir()
	comfy := t.TempDir()
	// A ComfyUI install named by an extra config: its comfy/sd1_tokenizer holds the
	// vocabulary.
	if err := os.MkdirAll(filepath.Join(comfy, "models", "checkpoints"), 0o755); err != nil {
		t.Fatal(err)
	}
	yml := filepath.Join(base, "extra_model_paths.yaml")
	if err := os.WriteFile(yml, []byte("comfyui:\n    base_path: "+comfy+"\n    checkpoints: models/checkpoints\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := folders.New(folders.Options{BaseDir: base, ExtraConfigs: []string{yml}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = FindVocab(p)
	if me, ok := err.(*MissingVocabError); !ok || !strings.Contains(me.Error(), "vocab.json and merges.txt") ||
		!slices.Contains(me.Searched, filepath.Join(comfy, "comfy", "sd1_tokenizer")) ||
		me.Searched[0] != filepath.Join(base, "models", "tokenizers", "clip") {
		t.Fatalf("FindVocab without a vocabulary: %v", err)
	}

	sd1tok := filepath.Join(comfy, "comfy", "sd1_tokenizer")
	writeTinyVocab(t, sd1tok)
	if got, err := FindVocab(p); err != nil || got != sd1tok {
		t.Fatalf("FindVocab = %q, %v; want the install's %s", got, err, sd1tok)
	}
	// models/tokenizers/clip of the base directory comes first.
	own := writeTinyVocab(t, filepath.Join(base, "models", "tokenizers", "clip"))
	if got, err := FindVocab(p); err != nil || got != own {
		t.Fatalf("FindVocab = %q, %v; want %s", got, err, own)
	}
	var v Vocabulary
	b1, err := v.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := v.Load(p)
	if b1 != b2 {
		t.Error("the vocabulary was parsed twice")
	}

	// Next to a diffusers-style model folder.
	base2 := t.TempDir()
	tok := filepath.Join(base2, "models", "diffusers", "sd15", "tokenizer")
	if err := os.MkdirAll(tok, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"vocab.json", "merges.txt"} {
		body := "#version: 0.2\n"
		if f == "vocab.json" {
			body = `{"<|startoftext|>": 0, "<|endoftext|>": 1}`
		}
		if err := os.WriteFile(filepath.Join(tok, f), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	p2, err := folders.New(folders.Options{BaseDir: base2})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := FindVocab(p2); err != nil || got != tok {
		t.Fatalf("FindVocab = %q, %v; want the diffusers tokenizer %s", got, err, tok)
	}
}

// TestSafetensorsSniffing: a safetensors file whose header length starts with the byte
// 0x80 (a pickle's first opcode) is still read as safetensors.
func TestSafetensorsSniffing(t *testing.T) {
	var ts randomTensors
	ts.vae("", TinyRandomSpec(detect.FamilySD1).VAE)
	var es []safetensors.Entry
	for _, x := range ts[:4] {
		shape := make([]int64, len(x.Shape))
		for i, d := range x.Shape {
			shape[i] = int64(d)
		}
		es = append(es, safetensors.Entry{Name: x.Name, DType: "F32", Shape: shape, Data: make([]byte, 4*len(x.Values(1)))})
	}
	path := filepath.Join(t.TempDir(), "x.safetensors")
	for pad := 0; pad < 512; pad++ {
		var buf bytes.Buffer
		if err := safetensors.Write(&buf, es, map[string]string{"pad": strings.Repeat("x", pad)}); err != nil {
			t.Fatal(err)
		}
		if buf.Bytes()[0] == 0x80 {
			if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	f, err := openFile(path)
	if err != nil {
		t.Fatalf("a safetensors file starting with 0x80: %v", err)
	}
	defer f.Close()
	if len(f.Tensors()) != 4 {
		t.Errorf("%d tensors, want 4", len(f.Tensors()))
	}
}

// TestTextEncoderFloat16 checks that float32 text encoder weights are rounded to
// float16 as ComfyUI stores text encoders, unless FP32TextEncoder is set.
func TestTextEncoderFloat16(t *testing.T) {
	rt := ckRuntime(t)
	dir := t.TempDir()
	spec := tinySDXL(81)
	spec.DType = "F32"
	path := filepath.Join(dir, "xl32.safetensors")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteRandomCheckpoint(f, spec); err != nil {
		t.Fatal(err)
	}
	f.Close()
	for _, fp32 := range []bool{false, true} {
		ck, err := LoadCheckpoint(rt, path, LoadOptions{SkipModel: true, SkipVAE: true, FP32TextEncoder: fp32})
		if err != nil {
			t.Fatal(err)
		}
		for _, te := range ck.CLIP.Encoders {
			m := te.Encoder.Model
			want := gpu.F16
			if fp32 {
				want = gpu.F32
			}
			w := m.Layers[0].Attn.Q.Weight
			if w.DType() != want || te.Encoder.Projection != nil && te.Encoder.Projection.DType() != want {
				t.Errorf("fp32=%v: encoder %s weights stored as %s, want %s", fp32, te.Name, w.DType(), want)
			}
			// Vectors are F32 either way, holding float16 values unless fp32.
			b, _ := m.Layers[0].Norm1.Bias.Float32()
			rounded := true
			for _, x := range b {
				h := dtype.F16ToF32(dtype.F32ToF16(x))
				if h != x {
					rounded = false
				}
			}
			if rounded == fp32 {
				t.Errorf("fp32=%v: encoder %s bias values rounded to float16: %v", fp32, te.Name, rounded)
			}
		}
		ck.Close()
	}
}

// TestSDXLPredictionMarkers: SDXL files with the v_pred (and ztsnr) marker tensors are
// v-prediction (rescaled to zero terminal SNR), as supported_models.SDXL.model_type
// decides.
func TestSDXLPredictionMarkers(t *testing.T) {
	rt := ckRuntime(t)
	dir := t.TempDir()
	tests := []struct {
		markers  []string
		pred     sampling.Prediction
		sigmaMax float64 // lower bound
	}{
		{nil, sampling.EPS, 14},
		{[]string{"v_pred"}, sampling.VPrediction, 14},
		{[]string{"v_pred", "ztsnr"}, sampling.VPrediction, 4000},
	}
	for i, tc := range tests {
		spec := tinySDXL(100)
		ts, err := spec.Tensors()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range tc.markers {
			ts = append(ts, RandomTensor{Name: m, Shape: []int{0}})
		}
		path := filepath.Join(dir, fmt.Sprintf("m%d.safetensors", i))
		writeTensors(t, path, ts, spec.Seed)
		ck, err := LoadCheckpoint(rt, path, LoadOptions{SkipCLIP: true, SkipVAE: true})
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := SaveCheckpoint(&buf, ck.Model, nil, nil, "", nil); err != nil {
			t.Fatal(err)
		}
		saved, err := safetensors.OpenBytes("saved", buf.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range tc.markers {
			if _, ok := saved.Info(m); !ok {
				t.Errorf("markers %v: saved checkpoint lacks %s", tc.markers, m)
			}
		}
		ms := ck.Model.Sampling
		if ms.Prediction() != tc.pred || float64(ms.SigmaMax()) < tc.sigmaMax || (tc.sigmaMax < 100 && ms.SigmaMax() > 100) {
			t.Errorf("markers %v: prediction %v, sigma max %v", tc.markers, ms.Prediction(), ms.SigmaMax())
		}
		ck.Close()
	}
}
