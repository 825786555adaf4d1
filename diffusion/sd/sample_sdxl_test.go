package sd

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/clip"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights/detect"
)

// TestSDXLCheckpointGuidance loads a tiny random SDXL checkpoint (real key names, the
// loader's CLIP-L + OpenCLIP-G) and runs CLIPTextEncodeSDXL-style prompts through the
// CFG guider: text_g two windows long, text_l one (padded with an empty-prompt window),
// features joined [L | G], the pooled CLIP-G output and the size conditioning forming y.
func TestSDXLCheckpointGuidance(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sdxl_tiny.safetensors")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteRandomCheckpoint(f, TinyRandomSpec(detect.FamilySDXL)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	// A small OpenAI-format vocabulary whose ids fit the tiny text models.
	merges := "#version: 0.2\nc a\nca t</w>\np h\no t\no </w>\nph ot\nphot o</w>\n"
	if err := os.WriteFile(filepath.Join(dir, "bpe_simple_vocab_16e6.txt"), []byte(merges), 0o644); err != nil {
		t.Fatal(err)
	}
	bpe, err := clip.LoadBPE(dir)
	if err != nil {
		t.Fatal(err)
	}
	rt := newRT(t)
	ck, err := LoadCheckpoint(rt, path, LoadOptions{Vocab: bpe})
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	if !ck.Model.ADM || len(ck.CLIP.Encoders) != 2 {
		t.Fatalf("ADM %v, %d encoders", ck.Model.ADM, len(ck.CLIP.Encoders))
	}
	ctx := context.Background()
	long := strings.Repeat("cat photo ", 60)
	pos, err := EncodePrompts(ctx, ck.CLIP, map[string]string{"g": long, "l": "cat"}, long)
	if err != nil {
		t.Fatal(err)
	}
	neg, err := EncodePrompt(ctx, ck.CLIP, "photo")
	if err != nil {
		t.Fatal(err)
	}
	width := 0
	for _, e := range ck.CLIP.Encoders {
		width += e.Encoder.Model.Embeddings.Token.Dim(1)
	}
	if s := pos[0].Embedding.Shape(); s[1] != 154 || s[2] != width {
		t.Fatalf("positive embedding %v, want (1, 154, %d)", s, width)
	}
	if pos[0].Pooled == nil || neg[0].Pooled == nil {
		t.Fatal("no pooled output")
	}
	pos[0].Size = nil
	tn := &tiny{rt: rt, model: ck.Model}
	// 154 and 77 tokens share a batch (padded by repetition); y comes along.
	var ys []int
	g := NewCFGGuider(ck.Model, pos, neg, 5)
	g.forward = func(ctx context.Context, in NetInputs) (*gpu.Tensor, error) {
		if in.Y == nil {
			t.Fatal("no y")
		}
		ys = append(ys, in.Y.Dim(0))
		return ck.Model.network().Forward(ctx, rt, in)
	}
	lat := tn.latent(t, nil, 1, 4, 8, 8)
	out, _, err := CustomSample(ctx, Noise{Seed: 3}, g, smp(t, "euler"), []float32{3, 1, 0}, lat, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkFinite(t, values(t, out))
	if len(ys) != 2 || ys[0] != 2 {
		t.Fatalf("UNet batches with y %v, want two steps of 2", ys)
	}
}
