package synth

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/internal/testenv"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

// goldenLayout reads the weight names and shapes (not in./out. tensors) of a golden file.
func goldenLayout(t *testing.T, family, file string) map[string][]int64 {
	t.Helper()
	f, err := safetensors.Open(filepath.Join(testenv.GoldenDir(t), family, file))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]int64{}
	for _, in := range f.Tensors() {
		if strings.HasPrefix(in.Name, "in.") || strings.HasPrefix(in.Name, "out.") {
			continue
		}
		out[in.Name] = in.Shape
	}
	return out
}

func compareLayout(t *testing.T, got Layout, want map[string][]int64) {
	t.Helper()
	g := map[string][]int64{}
	for _, tn := range got {
		if _, dup := g[tn.Name]; dup {
			t.Fatalf("duplicate tensor %s", tn.Name)
		}
		g[tn.Name] = tn.Shape
	}
	var missing, extra, wrong []string
	for k, s := range want {
		gs, ok := g[k]
		switch {
		case !ok:
			missing = append(missing, k)
		case !slices.Equal(gs, s):
			wrong = append(wrong, k)
		}
	}
	for k := range g {
		if _, ok := want[k]; !ok {
			extra = append(extra, k)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing)+len(extra)+len(wrong) > 0 {
		t.Fatalf("layout differs from ComfyUI's: missing %v, extra %v, wrong shape %v", missing, extra, wrong)
	}
}

// The layouts, at the golden fixtures' tiny sizes, have exactly the tensor names and
// shapes of the checkpoints ComfyUI built and loaded for those fixtures.
func TestLayoutsMatchGoldenCheckpoints(t *testing.T) {
	t.Run("sd15_unet", func(t *testing.T) {
		c := UNetConfig{InChannels: 4, OutChannels: 4, ModelChannels: 32, ChannelMult: []int{1, 2}, NumResBlocks: 1,
			TransformerDepth: []int{0, 1}, TransformerDepthMiddle: 1, ContextDim: 32}
		compareLayout(t, UNet(c, "model.diffusion_model."), goldenLayout(t, "unet", "sd15_tiny.safetensors"))
	})
	t.Run("sdxl_unet", func(t *testing.T) {
		c := UNetConfig{InChannels: 4, OutChannels: 4, ModelChannels: 32, ChannelMult: []int{1, 1}, NumResBlocks: 1,
			TransformerDepth: []int{0, 2}, TransformerDepthMiddle: 2, ContextDim: 32, UseLinearInTransformer: true, ADMInChannels: 64}
		compareLayout(t, UNet(c, "model.diffusion_model."), goldenLayout(t, "unet", "sdxl_tiny.safetensors"))
	})
	t.Run("vae", func(t *testing.T) {
		c := VAEConfig{Ch: 32, ZChannels: 4, NumResBlocks: 1, ChMult: []int{1, 2}}
		compareLayout(t, VAE(c, "first_stage_model."), goldenLayout(t, "vae", "sd_vae_tiny.safetensors"))
	})
	t.Run("clip", func(t *testing.T) {
		c := CLIPConfig{Hidden: 32, Intermediate: 128, Layers: 3, Vocab: 49408, Positions: 77, Projection: true}
		compareLayout(t, CLIP(c, "cond_stage_model.transformer."), goldenLayout(t, "clip", "clip_sd15_tiny.safetensors"))
	})
}

// The full SD1.5 layout has the well-known size: 1,066M parameters (UNet 860M, VAE 84M,
// CLIP-L 123M).
func TestSD15ParameterCount(t *testing.T) {
	var n int64
	for _, tn := range SD15Checkpoint() {
		p := int64(1)
		for _, d := range tn.Shape {
			p *= d
		}
		n += p
	}
	if n < 1_060_000_000 || n > 1_070_000_000 {
		t.Fatalf("SD1.5 layout has %d parameters, want about 1,066M", n)
	}
}

func TestWriteDeterministic(t *testing.T) {
	l := VAE(VAEConfig{Ch: 32, ZChannels: 4, NumResBlocks: 1, ChMult: []int{1, 2}}, "first_stage_model.")
	var a, b, c bytes.Buffer
	if err := Write(&a, l, weights.F16, 1); err != nil {
		t.Fatal(err)
	}
	if err := Write(&b, l, weights.F16, 1); err != nil {
		t.Fatal(err)
	}
	if err := Write(&c, l, weights.F16, 2); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) || bytes.Equal(a.Bytes(), c.Bytes()) {
		t.Fatal("same seed must give the same file and another seed another")
	}
	f, err := safetensors.OpenBytes("x", a.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Tensors()) != len(l) {
		t.Fatalf("%d tensors written, want %d", len(f.Tensors()), len(l))
	}
	meta, _ := json.Marshal(f.Metadata())
	if !strings.Contains(string(meta), "random weights") {
		t.Fatalf("metadata %s does not say the weights are random", meta)
	}
}
