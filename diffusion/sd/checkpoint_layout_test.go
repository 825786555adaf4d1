package sd

import (
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/internal/testenv"
	"github.com/forgeflow/forgeflow/weights/detect"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

// TestRandomLayoutsMatchGolden checks the random-checkpoint layouts, at the golden
// fixtures' tiny sizes, against the tensor names and shapes of the checkpoints ComfyUI
// itself built and loaded for those fixtures: every key and shape under each part's
// prefix must agree.
func TestRandomLayoutsMatchGolden(t *testing.T) {
	golden := testenv.GoldenDir(t)
	read := func(family, file string) map[string][]int {
		f, err := safetensors.Open(filepath.Join(golden, family, file))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		out := map[string][]int{}
		for _, in := range f.Tensors() {
			if strings.HasPrefix(in.Name, "in.") || strings.HasPrefix(in.Name, "out.") {
				continue
			}
			s := make([]int, len(in.Shape))
			for i, d := range in.Shape {
				s[i] = int(d)
			}
			out[in.Name] = s
		}
		return out
	}
	vae := RandomVAE{Ch: 32, Mult: []int{1, 2}, ResBlocks: 1}
	clipL := RandomText{Width: 32, Layers: 3, Vocab: 49408}
	for _, tc := range []struct {
		name, family, file, prefix string
		spec                       RandomSpec
	}{
		{"sd15_unet", "unet", "sd15_tiny.safetensors", unetPrefix, RandomSpec{Family: detect.FamilySD1, VAE: vae, CLIPL: clipL,
			UNet: RandomUNet{ModelChannels: 32, Mult: []int{1, 2}, ResBlocks: 1, Depth: []int{0, 1}, MidDepth: 1, Context: 32}}},
		{"sdxl_unet", "unet", "sdxl_tiny.safetensors", unetPrefix, RandomSpec{Family: detect.FamilySDXL, VAE: vae, CLIPL: clipL,
			OpenCLIP: RandomText{Width: 32, Layers: 2, Vocab: 49408, Projection: 32},
			UNet:     RandomUNet{ModelChannels: 32, Mult: []int{1, 1}, ResBlocks: 1, Depth: []int{0, 2}, MidDepth: 2, Context: 32, Linear: true, ADM: 64}}},
		{"vae", "vae", "sd_vae_tiny.safetensors", vaePrefix, RandomSpec{Family: detect.FamilySD1, VAE: vae, CLIPL: clipL,
			UNet: RandomUNet{ModelChannels: 32, Mult: []int{1}, ResBlocks: 1, Depth: []int{0}, MidDepth: 1, Context: 32}}},
		{"clip_l", "clip", "clip_sd15_tiny.safetensors", "cond_stage_model.transformer.text_model.", RandomSpec{Family: detect.FamilySD1, VAE: vae, CLIPL: clipL,
			UNet: RandomUNet{ModelChannels: 32, Mult: []int{1}, ResBlocks: 1, Depth: []int{0}, MidDepth: 1, Context: 32}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := read(tc.family, tc.file)
			ts, err := tc.spec.Tensors()
			if err != nil {
				t.Fatal(err)
			}
			got := map[string][]int{}
			for _, x := range ts {
				if strings.HasPrefix(x.Name, tc.prefix) {
					got[x.Name] = x.Shape
				}
			}
			var missing, extra, wrong []string
			for k, s := range want {
				if !strings.HasPrefix(k, tc.prefix) {
					continue
				}
				g, ok := got[k]
				switch {
				case !ok:
					missing = append(missing, k)
				case !slices.Equal(g, s):
					wrong = append(wrong, k)
				}
			}
			for k := range got {
				if _, ok := want[k]; !ok {
					extra = append(extra, k)
				}
			}
			sort.Strings(missing)
			sort.Strings(extra)
			sort.Strings(wrong)
			if len(missing)+len(extra)+len(wrong) > 0 {
				t.Fatalf("layout differs from ComfyUI's checkpoint: missing %v, extra %v, wrong shape %v", missing, extra, wrong)
			}
		})
	}
}
