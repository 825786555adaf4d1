package detect

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/gguf"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

// writeSafetensors writes ts as F32 zeros: the data is irrelevant to detection.
func writeSafetensors(t *testing.T, path string, ts tensors) {
	t.Helper()
	entries := make([]safetensors.Entry, len(ts))
	for i, ti := range ts {
		n, _ := weights.ShapeElements(ti.Shape, 1<<40)
		data := make([]byte, 4*n)
		entries[i] = safetensors.Entry{Name: ti.Name, DType: weights.F32, Shape: ti.Shape, Data: data}
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := safetensors.Write(f, entries, map[string]string{"note": "detect test"}); err != nil {
		t.Fatal(err)
	}
}

// One tiny model per family, written to disk with the real key names and detected
// through DetectFile.
func TestDetectFileFamilies(t *testing.T) {
	dir := t.TempDir()
	tinyXL := unetSpec{in: 4, out: 4, mc: 32, mult: []int{1, 1}, nres: []int{1, 1}, depth: []int{0, 2}, midDepth: 2, ctx: 32, linear: true, adm: 64}
	tinySD2 := unetSpec{in: 4, out: 4, mc: 32, mult: []int{1, 2}, nres: []int{1, 1}, depth: []int{1, 1}, midDepth: 1, ctx: 48, linear: true}
	tinyVAE := vaeSpec{ch: 8, z: 4, nres: 1, mult: []int{1, 2}, quant: true}
	tinyFlux := fluxSpec{hidden: 32, headDim: 16, depth: 1, single: 1, ctx: 16, vec: 8, in: 16}
	var lora tensors
	lora.loraModule("kohya", "lora_unet_down_blocks_0_attentions_0_proj_in", 32, 32, 4)
	lora.loraModule("kohya", "lora_te_text_model_encoder_layers_0_mlp_fc1", 64, 16, 4)
	cases := []struct {
		name   string
		ts     tensors
		kind   Kind
		family Family
	}{
		{"sd1_checkpoint.safetensors", join(pre("model.diffusion_model.", tinyUNet.build()), pre("first_stage_model.", tinyVAE.build()),
			pre("cond_stage_model.transformer.", clipHF(2, 16, 64, false))), KindCheckpoint, FamilySD1},
		{"sd2_unet.safetensors", tinySD2.build(), KindDiffusionModel, FamilySD2},
		{"sdxl_unet.sft", pre("model.diffusion_model.", tinyXL.build()), KindDiffusionModel, FamilySDXL},
		{"flux_schnell.safetensors", tinyFlux.build(), KindDiffusionModel, FamilyFluxSchnell},
		{"vae.safetensors", tinyVAE.build(), KindVAE, FamilyVAE},
		{"clip_l.safetensors", clipHF(2, 16, 64, true), KindTextEncoder, FamilyCLIPL},
		{"t5.safetensors", t5(2, 16, 2, 8, 32, true, false), KindTextEncoder, FamilyT5XXL},
		{"lora.safetensors", lora, KindLoRA, FamilyLoRA},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, tc.name)
			writeSafetensors(t, p, tc.ts)
			m, err := DetectFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if m.Kind != tc.kind || m.Family != tc.family {
				t.Fatalf("kind %s family %s, want %s %s", m.Kind, m.Family, tc.kind, tc.family)
			}
		})
	}
}

// writeGGUF writes ts as F32 GGUF tensors (dims in ggml's ne[] order).
func writeGGUF(t *testing.T, path, arch string, ts tensors) {
	t.Helper()
	kvs := []gguf.KV{{Key: "general.architecture", Type: gguf.TypeString, Value: arch}}
	var wts []gguf.WriteTensor
	for _, ti := range ts {
		dims := make([]uint64, len(ti.Shape))
		n := int64(1)
		for i, d := range ti.Shape {
			dims[len(dims)-1-i] = uint64(d)
			n *= d
		}
		wts = append(wts, gguf.WriteTensor{Name: ti.Name, Type: gguf.TypeF32, Dims: dims, Data: make([]byte, 4*n)})
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := gguf.Write(f, kvs, wts); err != nil {
		t.Fatal(err)
	}
}

// GGUF files as ComfyUI-GGUF users have them: a T5 encoder with llama.cpp's tensor names
// (city96's t5-v1_1-xxl GGUF) and a Flux transformer with its own names.
func TestDetectFileGGUF(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "t5-q8.gguf")
	writeGGUF(t, p, "t5encoder", t5(2, 16, 2, 8, 32, true, true))
	m, err := DetectFile(p)
	if err != nil {
		t.Fatal(err)
	}
	te := m.TextEncoders
	if m.Kind != KindTextEncoder || len(te) != 1 || te[0].Format != "gguf" || te[0].Family != FamilyT5XXL ||
		*te[0].T5 != (T5Config{DModel: 16, DFF: 32, DKV: 8, NumHeads: 2, NumLayers: 2, VocabSize: 32128, RelAttnBuckets: 32, Gated: true}) {
		t.Fatalf("kind %s encoders %+v", m.Kind, te)
	}
	p = filepath.Join(dir, "flux1-dev-Q4_K_S.gguf")
	writeGGUF(t, p, "flux", fluxSpec{hidden: 32, headDim: 16, depth: 2, single: 3, ctx: 16, vec: 8, in: 16, guidance: true}.build())
	m, err = DetectFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if m.Kind != KindDiffusionModel || m.Family != FamilyFluxDev || m.Diffusion.Flux.Depth != 2 || m.Diffusion.Flux.DepthSingleBlocks != 3 || m.Diffusion.Flux.NumHeads != 2 {
		t.Fatalf("kind %s family %s flux %+v", m.Kind, m.Family, m.Diffusion.Flux)
	}
}

func TestDetectFileErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name string
		path string
		want string
	}{
		{"missing", filepath.Join(dir, "nope.safetensors"), "no such file"},
		{"empty", write("empty.safetensors", nil), "empty file"},
		{"garbage", write("garbage.safetensors", []byte("not a model at all, just text")), "safetensors"},
		{"truncated gguf", write("t.gguf", []byte("GGUF\x03\x00")), "gguf"},
		{"bad torch zip", write("m.ckpt", []byte("PK\x03\x04 but no archive")), "torch"},
		{"bad legacy torch", write("old.ckpt", []byte("\x80\x02 truncated pickle")), "torch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DetectFile(tc.path)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
	var junk tensors
	junk.add("some.weight", 2, 2)
	p := filepath.Join(dir, "junk.safetensors")
	writeSafetensors(t, p, junk)
	if _, err := DetectFile(p); !errors.Is(err, ErrUnknown) || !strings.Contains(err.Error(), p) {
		t.Fatalf("junk: %v", err)
	}
}

// A safetensors file whose header length has 0x80 as its low byte (about 1 in 256 files)
// is still read as safetensors, not as a pickle.
func TestDetectFileSafetensorsHeader0x80(t *testing.T) {
	header := `{"__metadata__":{"format":"pt"}}`
	header += strings.Repeat(" ", 0x80-len(header))
	data := make([]byte, 8, 8+len(header))
	binary.LittleEndian.PutUint64(data, uint64(len(header)))
	data = append(data, header...)
	if data[0] != 0x80 {
		t.Fatalf("test file starts with %#x", data[0])
	}
	path := filepath.Join(t.TempDir(), "x.safetensors")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := DetectFile(path)
	if err != nil && (strings.Contains(err.Error(), "pickle") || strings.Contains(err.Error(), "torch")) {
		t.Fatalf("read as a pickle: %v", err)
	}
}
