package detect

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/forgeflow/forgeflow/internal/testenv"
)

// goldenCase is the part of a golden manifest entry these tests read.
type goldenCase struct {
	testenv.Case
	Config json.RawMessage `json:"config"`
	Prefix *string         `json:"weight_prefix"`
}

// prefix is the case's weight_prefix, which the tests need.
func (c *goldenCase) prefix(t *testing.T) string {
	t.Helper()
	if c.Prefix == nil {
		t.Fatal(c.FieldError("weight_prefix", "missing"))
	}
	return *c.Prefix
}

// TestGoldenUNet checks the UNet configuration against what ComfyUI's
// detect_unet_config derived from the same file (the manifest's config.detected).
func TestGoldenUNet(t *testing.T) {
	_, cases := testenv.GoldenCases[goldenCase](t, "unet")
	n := 0
	for _, c := range cases {
		var cfg struct {
			Detected *struct {
				ADMInChannels          *int  `json:"adm_in_channels"`
				ChannelMult            []int `json:"channel_mult"`
				ContextDim             int   `json:"context_dim"`
				InChannels             int   `json:"in_channels"`
				ModelChannels          int   `json:"model_channels"`
				NumResBlocks           []int `json:"num_res_blocks"`
				OutChannels            int   `json:"out_channels"`
				TransformerDepth       []int `json:"transformer_depth"`
				TransformerDepthMiddle int   `json:"transformer_depth_middle"`
				TransformerDepthOutput []int `json:"transformer_depth_output"`
				UseLinear              bool  `json:"use_linear_in_transformer"`
				UseTemporalAttention   bool  `json:"use_temporal_attention"`
			} `json:"detected"`
		}
		if err := json.Unmarshal(c.Config, &cfg); err != nil {
			t.Fatal(c.FieldError("config", "%v", err))
		}
		if cfg.Detected == nil {
			continue // encode_adm cases hold no model
		}
		n++
		t.Run(c.Name, func(t *testing.T) {
			m, err := DetectFile(c.Path())
			if err != nil {
				t.Fatal(err)
			}
			d := cfg.Detected
			want := UNetConfig{
				InChannels: d.InChannels, OutChannels: d.OutChannels, ModelChannels: d.ModelChannels,
				NumResBlocks: d.NumResBlocks, ChannelMult: d.ChannelMult, TransformerDepth: d.TransformerDepth,
				TransformerDepthOutput: d.TransformerDepthOutput, TransformerDepthMiddle: d.TransformerDepthMiddle,
				ContextDim: d.ContextDim, UseLinearInTransformer: d.UseLinear, VideoModel: d.UseTemporalAttention,
			}
			wantFamily := FamilySD1
			if d.ADMInChannels != nil {
				want.ADMInChannels = *d.ADMInChannels
				wantFamily = FamilySDXL
			}
			if m.Kind != KindDiffusionModel || m.Family != wantFamily || m.Diffusion.Prefix != c.prefix(t) {
				t.Fatalf("kind %s family %s prefix %q", m.Kind, m.Family, m.Diffusion.Prefix)
			}
			// Tiny sizes: not the released family, so heads stay for the caller to set.
			if m.Diffusion.Exact || m.Diffusion.Prediction != PredictEps {
				t.Fatalf("exact %v prediction %s", m.Diffusion.Exact, m.Diffusion.Prediction)
			}
			if !reflect.DeepEqual(*m.Diffusion.UNet, want) {
				t.Fatalf("config\n got %+v\nwant %+v (ComfyUI's detect_unet_config)", *m.Diffusion.UNet, want)
			}
		})
	}
	if n == 0 {
		t.Fatal("the unet family has no model case (config.detected)")
	}
}

func TestGoldenFlux(t *testing.T) {
	_, cases := testenv.GoldenCases[goldenCase](t, "flux")
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			var cfg struct {
				U struct {
					AxesDim           []int   `json:"axes_dim"`
					ContextInDim      int     `json:"context_in_dim"`
					Depth             int     `json:"depth"`
					DepthSingleBlocks int     `json:"depth_single_blocks"`
					GuidanceEmbed     bool    `json:"guidance_embed"`
					HiddenSize        int     `json:"hidden_size"`
					InChannels        int     `json:"in_channels"`
					MLPRatio          float64 `json:"mlp_ratio"`
					NumHeads          int     `json:"num_heads"`
					OutChannels       int     `json:"out_channels"`
					PatchSize         int     `json:"patch_size"`
					QKVBias           bool    `json:"qkv_bias"`
					Theta             int     `json:"theta"`
					VecInDim          int     `json:"vec_in_dim"`
				} `json:"unet_config"`
			}
			if err := json.Unmarshal(c.Config, &cfg); err != nil {
				t.Fatal(err)
			}
			m, err := DetectFile(c.Path())
			if err != nil {
				t.Fatal(err)
			}
			u := cfg.U
			want := FluxConfig{InChannels: u.InChannels, OutChannels: u.OutChannels, PatchSize: u.PatchSize, HiddenSize: u.HiddenSize,
				NumHeads: u.NumHeads, Depth: u.Depth, DepthSingleBlocks: u.DepthSingleBlocks, ContextInDim: u.ContextInDim,
				VecInDim: u.VecInDim, MLPRatio: u.MLPRatio, Theta: u.Theta, QKVBias: u.QKVBias, GuidanceEmbed: u.GuidanceEmbed}
			if m.Kind != KindDiffusionModel || m.Family != FamilyFluxDev || m.Diffusion.Exact {
				t.Fatalf("kind %s family %s exact %v", m.Kind, m.Family, m.Diffusion.Exact)
			}
			// Rope axes cannot be read from shapes at this head width.
			got := *m.Diffusion.Flux
			if got.AxesDim != nil {
				t.Fatalf("axes %v guessed for a %d-wide head", got.AxesDim, u.HiddenSize/u.NumHeads)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("config\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestGoldenVAE(t *testing.T) {
	_, cases := testenv.GoldenCases[goldenCase](t, "vae")
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			var cfg struct {
				DD struct {
					AttnResolutions []int `json:"attn_resolutions"`
					Ch              int   `json:"ch"`
					ChMult          []int `json:"ch_mult"`
					DoubleZ         bool  `json:"double_z"`
					InChannels      int   `json:"in_channels"`
					NumResBlocks    int   `json:"num_res_blocks"`
					OutCh           int   `json:"out_ch"`
					ZChannels       int   `json:"z_channels"`
				} `json:"ddconfig"`
				EmbedDim int `json:"embed_dim"`
			}
			if err := json.Unmarshal(c.Config, &cfg); err != nil {
				t.Fatal(err)
			}
			m, err := DetectFile(c.Path())
			if err != nil {
				t.Fatal(err)
			}
			d := cfg.DD
			want := VAEConfig{Prefix: c.prefix(t), InChannels: d.InChannels, OutChannels: d.OutCh, Ch: d.Ch, ChMult: d.ChMult,
				NumResBlocks: d.NumResBlocks, LatentChannels: d.ZChannels, EmbedDim: cfg.EmbedDim, DoubleZ: d.DoubleZ,
				MidAttention: true, HasEncoder: true}
			if len(d.AttnResolutions) != 0 {
				t.Fatalf("fixture has attention levels %v; extend the test", d.AttnResolutions)
			}
			if m.Kind != KindVAE || m.Family != FamilyVAE || !reflect.DeepEqual(*m.VAE, want) {
				t.Fatalf("kind %s family %s\n got %+v\nwant %+v", m.Kind, m.Family, *m.VAE, want)
			}
		})
	}
}

func TestGoldenTextEncoders(t *testing.T) {
	type hfConfig struct {
		HiddenSize   int    `json:"hidden_size"`
		HiddenAct    string `json:"hidden_act"`
		Intermediate int    `json:"intermediate_size"`
		MaxPositions int    `json:"max_position_embeddings"`
		NumLayers    int    `json:"num_hidden_layers"`
		VocabSize    int    `json:"vocab_size"`
		DFF          int    `json:"d_ff"`
		DKV          int    `json:"d_kv"`
		DModel       int    `json:"d_model"`
		NumHeads     int    `json:"num_heads"`
		T5Layers     int    `json:"num_layers"`
		IsGatedAct   bool   `json:"is_gated_act"`
	}
	for _, fam := range []string{"clip", "t5"} {
		_, cases := testenv.GoldenCases[goldenCase](t, fam)
		for _, c := range cases {
			t.Run(c.Name, func(t *testing.T) {
				var cfg struct {
					Opts    map[string]hfConfig `json:"model_options"`
					Buckets int                 `json:"relative_attention_num_buckets"`
				}
				if err := json.Unmarshal(c.Config, &cfg); err != nil {
					t.Fatal(err)
				}
				m, err := DetectFile(c.Path())
				if err != nil {
					t.Fatal(err)
				}
				if m.Kind != KindTextEncoder || len(m.TextEncoders) != 1 {
					t.Fatalf("kind %s, %d encoders", m.Kind, len(m.TextEncoders))
				}
				te := m.TextEncoders[0]
				if fam == "clip" {
					h, ok := cfg.Opts["clip_l_model_config"]
					if !ok {
						t.Fatal(c.FieldError("config.model_options", "holds no clip_l_model_config"))
					}
					prefix, err := c.WeightPrefix("embeddings.token_embedding.weight")
					if err != nil {
						t.Fatal(err)
					}
					want := CLIPConfig{HiddenSize: h.HiddenSize, Layers: h.NumLayers, IntermediateSize: h.Intermediate,
						VocabSize: h.VocabSize, MaxPositions: h.MaxPositions, HiddenAct: h.HiddenAct,
						ProjectionDim: h.HiddenSize} // the fixture carries text_projection.weight [hidden, hidden]
					if te.Family != FamilyCLIPL || te.Exact || te.Format != "hf" || te.Prefix != prefix || *te.CLIP != want {
						t.Fatalf("%s %s exact %v prefix %q\n got %+v\nwant %+v", te.Family, te.Format, te.Exact, te.Prefix, *te.CLIP, want)
					}
					return
				}
				h := cfg.Opts["t5xxl_model_config"]
				want := T5Config{DModel: h.DModel, DFF: h.DFF, DKV: h.DKV, NumHeads: h.NumHeads, NumLayers: h.T5Layers,
					VocabSize: h.VocabSize, RelAttnBuckets: cfg.Buckets, Gated: h.IsGatedAct}
				if te.Family != FamilyT5XXL || te.Exact || te.Format != "t5" || te.Prefix != c.prefix(t) || *te.T5 != want {
					t.Fatalf("%s %s exact %v prefix %q\n got %+v\nwant %+v", te.Family, te.Format, te.Exact, te.Prefix, *te.T5, want)
				}
			})
		}
	}
}

func TestGoldenLoRA(t *testing.T) {
	_, cases := testenv.GoldenCases[goldenCase](t, "lora")
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			var cfg struct {
				KeyMapping map[string]string `json:"key_mapping"`
			}
			if err := json.Unmarshal(c.Config, &cfg); err != nil {
				t.Fatal(err)
			}
			m, err := DetectFile(c.Path())
			if err != nil {
				t.Fatal(err)
			}
			l := m.LoRA
			if m.Kind != KindLoRA || l.Format != "kohya" || l.Base != FamilySD1 || !l.UNet || !l.TextEncoder || !l.HasAlpha {
				t.Fatalf("kind %s lora %+v", m.Kind, l)
			}
			if l.Modules != len(cfg.KeyMapping) || l.Adapters["lora"] != l.Modules {
				t.Fatalf("%d modules (%v), manifest maps %d", l.Modules, l.Adapters, len(cfg.KeyMapping))
			}
		})
	}
}
