package sd

import (
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/internal/testenv"
	"github.com/forgeflow/forgeflow/weights/detect"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

// goldenLayout is a fixture's weights and the random spec that should reproduce them
// under prefix.
type goldenLayout struct {
	name, path, prefix string
	spec               RandomSpec
	// skip says why the random generator cannot express the case ("" when it can).
	skip string
}

// goldenLayouts derives, from the golden unet, vae and clip cases' configs, the random
// specs at the fixtures' sizes.
func goldenLayouts(t *testing.T) []goldenLayout {
	vae := RandomVAE{Ch: 32, Mult: []int{1, 2}, ResBlocks: 1}
	clipL := RandomText{Width: 32, Layers: 3, Vocab: 49408}
	tinyUNet := RandomUNet{ModelChannels: 32, Mult: []int{1}, ResBlocks: 1, Depth: []int{0}, MidDepth: 1, Context: 32}
	var out []goldenLayout
	for _, u := range testenv.GoldenUNets(t) {
		var cfg struct {
			ModelChannels int   `json:"model_channels"`
			Mult          []int `json:"channel_mult"`
			ResBlocks     []int `json:"num_res_blocks"`
			Depth         []int `json:"transformer_depth"`
			MidDepth      int   `json:"transformer_depth_middle"`
			Linear        bool  `json:"use_linear_in_transformer"`
		}
		if err := u.Decode("config.unet_config", &cfg); err != nil {
			t.Fatal(err)
		}
		l := goldenLayout{name: u.Name, path: u.Path(), prefix: u.Prefix}
		ru := RandomUNet{ModelChannels: cfg.ModelChannels, Mult: cfg.Mult, MidDepth: cfg.MidDepth, Context: u.ContextDim, Linear: cfg.Linear, ADM: u.ADM}
		if len(cfg.ResBlocks) != len(cfg.Mult) || len(cfg.Mult) == 0 || len(cfg.Depth) != len(cfg.Mult)*cfg.ResBlocks[0] {
			t.Fatal(u.FieldError("config.unet_config", "num_res_blocks %v and transformer_depth %v do not fit channel_mult %v", cfg.ResBlocks, cfg.Depth, cfg.Mult))
		}
		ru.ResBlocks = cfg.ResBlocks[0]
		for lvl := range cfg.Mult {
			d := cfg.Depth[lvl*ru.ResBlocks]
			for _, x := range cfg.Depth[lvl*ru.ResBlocks : (lvl+1)*ru.ResBlocks] {
				if x != d {
					l.skip = "transformer depth varies within a level"
				}
			}
			if cfg.ResBlocks[lvl] != ru.ResBlocks {
				l.skip = "num_res_blocks varies between levels"
			}
			ru.Depth = append(ru.Depth, d)
		}
		l.spec = RandomSpec{Family: detect.FamilySD1, VAE: vae, CLIPL: clipL, UNet: ru}
		if u.ADM != 0 {
			l.spec.Family = detect.FamilySDXL
			l.spec.OpenCLIP = RandomText{Width: 32, Layers: 2, Vocab: 49408, Projection: 32}
		}
		out = append(out, l)
	}
	for _, v := range testenv.GoldenVAEs(t) {
		var dd struct {
			Ch        int   `json:"ch"`
			Mult      []int `json:"ch_mult"`
			ResBlocks int   `json:"num_res_blocks"`
			Attn      []int `json:"attn_resolutions"`
		}
		if err := v.Decode("config.ddconfig", &dd); err != nil {
			t.Fatal(err)
		}
		l := goldenLayout{name: v.Name, path: v.Path(), prefix: v.Prefix,
			spec: RandomSpec{Family: detect.FamilySD1, VAE: RandomVAE{Ch: dd.Ch, Mult: dd.Mult, ResBlocks: dd.ResBlocks}, CLIPL: clipL, UNet: tinyUNet}}
		if v.LatentChannels != 4 || len(dd.Attn) != 0 {
			l.skip = "RandomVAE builds 4 latent channels and no attention outside the mid block"
		}
		out = append(out, l)
	}
	for _, c := range testenv.GoldenCLIPs(t) {
		var opts map[string]struct {
			Intermediate int `json:"intermediate_size"`
			Positions    int `json:"max_position_embeddings"`
			Vocab        int `json:"vocab_size"`
		}
		if err := c.Decode("config.model_options", &opts); err != nil {
			t.Fatal(err)
		}
		l := goldenLayout{name: c.Name, path: c.Path(), prefix: c.Prefix}
		for _, o := range opts {
			l.spec = RandomSpec{Family: detect.FamilySD1, VAE: vae, CLIPL: RandomText{Width: c.Hidden, Layers: c.Layers, Vocab: o.Vocab}, UNet: tinyUNet}
			if o.Intermediate != 4*c.Hidden || o.Positions != 77 {
				l.skip = "RandomText builds a 4×-wide MLP and 77 positions"
			}
		}
		out = append(out, l)
	}
	return out
}

// TestRandomLayoutsMatchGolden checks the random-checkpoint layouts, at the golden
// fixtures' sizes (from each case's config), against the tensor names and shapes of the
// checkpoints ComfyUI itself built and loaded for those fixtures: every key and shape
// under each part's prefix must agree.
func TestRandomLayoutsMatchGolden(t *testing.T) {
	read := func(path string) map[string][]int {
		f, err := safetensors.Open(path)
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
	for _, tc := range goldenLayouts(t) {
		t.Run(tc.name, func(t *testing.T) {
			if tc.skip != "" {
				t.Skip(tc.skip)
			}
			want := read(tc.path)
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
