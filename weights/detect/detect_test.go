package detect

import (
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
)

func mustDetect(t *testing.T, ts tensors) *Model {
	t.Helper()
	m, err := Detect(Input{Tensors: ts})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestUNetFamilies(t *testing.T) {
	sdxlTensors := sdxlUNet.build()
	cases := []struct {
		name   string
		ts     tensors
		family Family
		exact  bool
		pred   Prediction
		want   UNetConfig
	}{
		{"sd15", sd15UNet.build(), FamilySD1, true, PredictEps, UNetConfig{
			InChannels: 4, OutChannels: 4, ModelChannels: 320,
			NumResBlocks: []int{2, 2, 2, 2}, ChannelMult: []int{1, 2, 4, 4},
			TransformerDepth:       []int{1, 1, 1, 1, 1, 1, 0, 0},
			TransformerDepthOutput: []int{1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0},
			TransformerDepthMiddle: 1, ContextDim: 768, NumHeads: 8, NumHeadChannels: -1,
		}},
		{"sd21", sd21UNet.build(), FamilySD2, true, PredictV, UNetConfig{
			InChannels: 4, OutChannels: 4, ModelChannels: 320,
			NumResBlocks: []int{2, 2, 2, 2}, ChannelMult: []int{1, 2, 4, 4},
			TransformerDepth:       []int{1, 1, 1, 1, 1, 1, 0, 0},
			TransformerDepthOutput: []int{1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0},
			TransformerDepthMiddle: 1, ContextDim: 1024, UseLinearInTransformer: true, NumHeads: -1, NumHeadChannels: 64,
		}},
		{"sdxl", sdxlTensors, FamilySDXL, true, PredictEps, UNetConfig{
			InChannels: 4, OutChannels: 4, ModelChannels: 320,
			NumResBlocks: []int{2, 2, 2}, ChannelMult: []int{1, 2, 4},
			TransformerDepth:       []int{0, 0, 2, 2, 10, 10},
			TransformerDepthOutput: []int{0, 0, 0, 2, 2, 2, 10, 10, 10},
			TransformerDepthMiddle: 10, ContextDim: 2048, ADMInChannels: 2816, UseLinearInTransformer: true,
			NumHeads: -1, NumHeadChannels: 64,
		}},
		{"sdxl_refiner", refUNet.build(), FamilySDXLRefiner, true, PredictEps, UNetConfig{
			InChannels: 4, OutChannels: 4, ModelChannels: 384,
			NumResBlocks: []int{2, 2, 2, 2}, ChannelMult: []int{1, 2, 4, 4},
			TransformerDepth:       []int{0, 0, 4, 4, 4, 4, 0, 0},
			TransformerDepthOutput: []int{0, 0, 0, 4, 4, 4, 4, 4, 4, 0, 0, 0},
			TransformerDepthMiddle: 4, ContextDim: 1280, ADMInChannels: 2560, UseLinearInTransformer: true,
			NumHeads: -1, NumHeadChannels: 64,
		}},
		{"tiny sd1-shaped", tinyUNet.build(), FamilySD1, false, PredictEps, UNetConfig{
			InChannels: 4, OutChannels: 4, ModelChannels: 32,
			NumResBlocks: []int{1, 1}, ChannelMult: []int{1, 2},
			TransformerDepth: []int{0, 1}, TransformerDepthOutput: []int{0, 0, 1, 1},
			TransformerDepthMiddle: 1, ContextDim: 32,
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := mustDetect(t, tc.ts)
			if m.Kind != KindDiffusionModel || m.Family != tc.family || m.Diffusion.Exact != tc.exact || m.Diffusion.Prediction != tc.pred {
				t.Fatalf("got kind %s family %s exact %v prediction %s", m.Kind, m.Family, m.Diffusion.Exact, m.Diffusion.Prediction)
			}
			if m.Unsupported != "" || m.Diffusion.Prefix != "" {
				t.Fatalf("unsupported %q prefix %q", m.Unsupported, m.Diffusion.Prefix)
			}
			if got := *m.Diffusion.UNet; !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("config\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestUNetVariantsAndPrediction(t *testing.T) {
	inpaint := sd15UNet
	inpaint.in = 9
	m := mustDetect(t, inpaint.build())
	if m.Family != FamilySD1 || m.Diffusion.Variant != "inpaint" || m.Unsupported != "" {
		t.Fatalf("sd1 inpaint: %s %q %q", m.Family, m.Diffusion.Variant, m.Unsupported)
	}
	ip2p := sd15UNet
	ip2p.in = 8
	m = mustDetect(t, ip2p.build())
	if m.Diffusion.Variant != "instructpix2pix" || m.Unsupported != "" || !m.Diffusion.Exact {
		t.Fatalf("ip2p: %q %q", m.Diffusion.Variant, m.Unsupported)
	}
	xlIP2P := sdxlUNet
	xlIP2P.in = 8
	if m = mustDetect(t, xlIP2P.build()); m.Family != FamilySDXL || m.Diffusion.Variant != "instructpix2pix" || m.Unsupported != "" || !m.Diffusion.Exact {
		t.Fatalf("sdxl ip2p: %s %q %q", m.Family, m.Diffusion.Variant, m.Unsupported)
	}
	// Another size with an image latent beside the latent (8 = 2·4 inputs).
	tinyIP2P := tinyUNet
	tinyIP2P.in = 8
	if m = mustDetect(t, tinyIP2P.build()); m.Family != FamilySD1 || m.Diffusion.Variant != "instructpix2pix" || m.Diffusion.Exact {
		t.Fatalf("tiny ip2p: %s %q exact %v", m.Family, m.Diffusion.Variant, m.Diffusion.Exact)
	}
	ssd := sdxlUNet
	ssd.depth = []int{0, 2, 4}
	ssd.midDepth = 4
	if m = mustDetect(t, ssd.build()); m.Family != FamilySDXL || m.Diffusion.Variant != "ssd1b" || !m.Diffusion.Exact {
		t.Fatalf("ssd1b: %s %q", m.Family, m.Diffusion.Variant)
	}

	// SDXL prediction markers live at the top level of the file.
	for _, tc := range []struct {
		extra   []string
		pred    Prediction
		variant string
	}{
		{[]string{"v_pred"}, PredictV, ""},
		{[]string{"v_pred", "ztsnr"}, PredictV, "zsnr"},
		{[]string{"edm_vpred.sigma_max"}, PredictVEDM, ""},
		{[]string{"edm_mean", "edm_std"}, PredictEDM, "playground_v2.5"},
	} {
		ts := pre("model.diffusion_model.", sdxlUNet.build())
		for _, k := range tc.extra {
			ts.add(k)
		}
		m := mustDetect(t, ts)
		if m.Diffusion.Prediction != tc.pred || m.Diffusion.Variant != tc.variant || m.Diffusion.Prefix != "model.diffusion_model." {
			t.Errorf("%v: prediction %s variant %q", tc.extra, m.Diffusion.Prediction, m.Diffusion.Variant)
		}
	}

	// SD2: v-prediction when the bias spread is above 0.09 (768-v), eps otherwise.
	spread := func(amp float32) func(string) ([]float32, error) {
		return func(name string) ([]float32, error) {
			if name != "model.diffusion_model."+sd2VTensor {
				return nil, errors.New("unexpected read of " + name)
			}
			v := make([]float32, 320)
			for i := range v {
				v[i] = amp * float32(i%2*2-1)
			}
			return v, nil
		}
	}
	sd2 := pre("model.diffusion_model.", sd21UNet.build())
	for _, tc := range []struct {
		amp  float32
		want Prediction
	}{{0.2, PredictV}, {0.05, PredictEps}} {
		m, err := Detect(Input{Tensors: sd2, Values: spread(tc.amp)})
		if err != nil {
			t.Fatal(err)
		}
		if m.Diffusion.Prediction != tc.want {
			t.Errorf("std %v: prediction %s, want %s", tc.amp, m.Diffusion.Prediction, tc.want)
		}
	}
	_, err := Detect(Input{Tensors: sd2, Values: func(string) ([]float32, error) { return nil, errors.New("disk on fire") }})
	if err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("read error not reported: %v", err)
	}
	if got := populationStd([]float32{1, 3}); got != 1 {
		t.Fatalf("populationStd = %v", got)
	}
	if !math.IsNaN(populationStd(nil)) {
		t.Fatal("std of nothing")
	}
}

func TestFluxAndSD3(t *testing.T) {
	schnell := fluxDev
	schnell.guidance = false
	tiny := fluxSpec{hidden: 64, headDim: 32, depth: 1, single: 1, ctx: 32, vec: 32, in: 16, guidance: true}
	cases := []struct {
		name   string
		ts     tensors
		family Family
		exact  bool
		pred   Prediction
		want   *FluxConfig
	}{
		{"dev", fluxDev.build(), FamilyFluxDev, true, PredictFlux, &FluxConfig{InChannels: 16, OutChannels: 16, PatchSize: 2,
			HiddenSize: 3072, NumHeads: 24, Depth: 19, DepthSingleBlocks: 38, ContextInDim: 4096, VecInDim: 768, MLPRatio: 4,
			AxesDim: []int{16, 56, 56}, Theta: 10000, QKVBias: true, GuidanceEmbed: true}},
		{"schnell", schnell.build(), FamilyFluxSchnell, true, PredictFlow, &FluxConfig{InChannels: 16, OutChannels: 16, PatchSize: 2,
			HiddenSize: 3072, NumHeads: 24, Depth: 19, DepthSingleBlocks: 38, ContextInDim: 4096, VecInDim: 768, MLPRatio: 4,
			AxesDim: []int{16, 56, 56}, Theta: 10000, QKVBias: true}},
		{"tiny", tiny.build(), FamilyFluxDev, false, PredictFlux, &FluxConfig{InChannels: 16, OutChannels: 16, PatchSize: 2,
			HiddenSize: 64, NumHeads: 2, Depth: 1, DepthSingleBlocks: 1, ContextInDim: 32, VecInDim: 32, MLPRatio: 4,
			Theta: 10000, QKVBias: true, GuidanceEmbed: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := mustDetect(t, tc.ts)
			d := m.Diffusion
			if m.Kind != KindDiffusionModel || m.Family != tc.family || d.Exact != tc.exact || d.Prediction != tc.pred || m.Unsupported != "" {
				t.Fatalf("kind %s family %s exact %v pred %s unsupported %q", m.Kind, m.Family, d.Exact, d.Prediction, m.Unsupported)
			}
			if !reflect.DeepEqual(d.Flux, tc.want) {
				t.Fatalf("config\n got %+v\nwant %+v", d.Flux, tc.want)
			}
		})
	}
	m := mustDetect(t, pre("model.diffusion_model.", sd3MMDiT()))
	want := &MMDiTConfig{InChannels: 16, OutChannels: 16, PatchSize: 2, Depth: 24, ADMInChannels: 2048,
		ContextInDim: 4096, ContextOutDim: 1536, NumPatches: 36864, PosEmbedMaxSize: 192}
	if m.Family != FamilySD3 || !m.Diffusion.Exact || m.Unsupported != "" || !reflect.DeepEqual(m.Diffusion.MMDiT, want) {
		t.Fatalf("sd3: family %s unsupported %q config %+v", m.Family, m.Unsupported, m.Diffusion.MMDiT)
	}
}

func TestVAE(t *testing.T) {
	for _, tc := range []struct {
		name   string
		ts     tensors
		prefix string
		want   VAEConfig
	}{
		{"sd", sdVAE.build(), "", VAEConfig{InChannels: 3, OutChannels: 3, Ch: 128, ChMult: []int{1, 2, 4, 4}, NumResBlocks: 2,
			LatentChannels: 4, EmbedDim: 4, DoubleZ: true, MidAttention: true, HasEncoder: true}},
		{"flux ae", pre("vae.", fluxVAE.build()), "vae.", VAEConfig{Prefix: "vae.", InChannels: 3, OutChannels: 3, Ch: 128,
			ChMult: []int{1, 2, 4, 4}, NumResBlocks: 2, LatentChannels: 16, DoubleZ: true, MidAttention: true, HasEncoder: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := mustDetect(t, tc.ts)
			if m.Kind != KindVAE || m.Family != FamilyVAE || m.VAE == nil {
				t.Fatalf("kind %s family %s", m.Kind, m.Family)
			}
			if !reflect.DeepEqual(*m.VAE, tc.want) {
				t.Fatalf("config\n got %+v\nwant %+v", *m.VAE, tc.want)
			}
		})
	}
	// A decoder-only file still gives the same shape description.
	var dec tensors
	for _, ti := range sdVAE.build() {
		if strings.HasPrefix(ti.Name, "decoder.") || strings.HasPrefix(ti.Name, "post_quant_conv.") {
			dec = append(dec, ti)
		}
	}
	m := mustDetect(t, dec)
	if m.VAE.HasEncoder || m.VAE.Ch != 128 || !reflect.DeepEqual(m.VAE.ChMult, []int{1, 2, 4, 4}) || m.VAE.NumResBlocks != 2 || m.VAE.LatentChannels != 4 {
		t.Fatalf("decoder only: %+v", m.VAE)
	}
}

func TestTextEncoders(t *testing.T) {
	for _, tc := range []struct {
		name   string
		ts     tensors
		family Family
		format string
		exact  bool
	}{
		{"clip-l hf", clipHF(12, 768, 3072, false), FamilyCLIPL, "hf", true},
		{"clip-g hf", clipHF(32, 1280, 5120, true), FamilyCLIPG, "hf", true},
		{"clip-g open_clip", clipOpen(32, 1280), FamilyCLIPG, "open_clip", true},
		{"clip-h open_clip", clipOpen(24, 1024), FamilyCLIPH, "open_clip", true},
		{"t5xxl", t5(24, 4096, 64, 64, 10240, true, false), FamilyT5XXL, "t5", true},
		{"t5xxl gguf", t5(24, 4096, 64, 64, 10240, true, true), FamilyT5XXL, "gguf", true},
		{"t5xl", t5(24, 2048, 32, 64, 5120, true, false), FamilyT5XL, "t5", true},
		{"t5 base (original)", t5(12, 768, 12, 64, 3072, false, false), FamilyT5, "t5", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := mustDetect(t, tc.ts)
			if m.Kind != KindTextEncoder || len(m.TextEncoders) != 1 {
				t.Fatalf("kind %s encoders %d", m.Kind, len(m.TextEncoders))
			}
			te := m.TextEncoders[0]
			if m.Family != tc.family || te.Family != tc.family || te.Format != tc.format || te.Exact != tc.exact {
				t.Fatalf("family %s format %s exact %v", te.Family, te.Format, te.Exact)
			}
		})
	}
	m := mustDetect(t, clipHF(12, 768, 3072, false))
	if want := (CLIPConfig{HiddenSize: 768, Layers: 12, IntermediateSize: 3072, VocabSize: 49408, MaxPositions: 77,
		NumHeads: 12, HiddenAct: "quick_gelu"}); *m.TextEncoders[0].CLIP != want {
		t.Fatalf("clip-l config %+v", *m.TextEncoders[0].CLIP)
	}
	m = mustDetect(t, clipOpen(32, 1280))
	if c := m.TextEncoders[0].CLIP; c.NumHeads != 20 || c.HiddenAct != "gelu" || c.ProjectionDim != 1280 || c.IntermediateSize != 5120 {
		t.Fatalf("clip-g config %+v", c)
	}
	for _, gguf := range []bool{false, true} {
		m = mustDetect(t, t5(24, 4096, 64, 64, 10240, true, gguf))
		want := T5Config{DModel: 4096, DFF: 10240, DKV: 64, NumHeads: 64, NumLayers: 24, VocabSize: 32128, RelAttnBuckets: 32, Gated: true}
		if *m.TextEncoders[0].T5 != want {
			t.Fatalf("t5 (gguf %v) config %+v", gguf, *m.TextEncoders[0].T5)
		}
	}
}

// Single-file checkpoints: every part under its prefix, as the releases ship them.
func TestCheckpoints(t *testing.T) {
	type part struct {
		family Family
		prefix string
	}
	cases := []struct {
		name   string
		ts     tensors
		family Family
		vae    string // VAE prefix
		tes    []part
	}{
		{"sd15", join(pre("model.diffusion_model.", sd15UNet.build()), pre("first_stage_model.", sdVAE.build()),
			pre("cond_stage_model.transformer.", clipHF(12, 768, 3072, false))),
			FamilySD1, "first_stage_model.", []part{{FamilyCLIPL, "cond_stage_model.transformer.text_model."}}},
		{"sd21", join(pre("model.diffusion_model.", sd21UNet.build()), pre("first_stage_model.", sdVAE.build()),
			pre("cond_stage_model.model.", clipOpen(24, 1024))),
			FamilySD2, "first_stage_model.", []part{{FamilyCLIPH, "cond_stage_model.model."}}},
		{"sdxl", join(pre("model.diffusion_model.", sdxlUNet.build()), pre("first_stage_model.", sdVAE.build()),
			pre("conditioner.embedders.0.transformer.", clipHF(12, 768, 3072, false)),
			pre("conditioner.embedders.1.model.", clipOpen(32, 1280))),
			FamilySDXL, "first_stage_model.", []part{{FamilyCLIPL, "conditioner.embedders.0.transformer.text_model."},
				{FamilyCLIPG, "conditioner.embedders.1.model."}}},
		{"sdxl refiner", join(pre("model.diffusion_model.", refUNet.build()), pre("first_stage_model.", sdVAE.build()),
			pre("conditioner.embedders.0.model.", clipOpen(32, 1280))),
			FamilySDXLRefiner, "first_stage_model.", []part{{FamilyCLIPG, "conditioner.embedders.0.model."}}},
		{"flux all-in-one", join(pre("model.diffusion_model.", fluxDev.build()), pre("vae.", fluxVAE.build()),
			pre("text_encoders.clip_l.transformer.", clipHF(12, 768, 3072, false)),
			pre("text_encoders.t5xxl.transformer.", t5(24, 4096, 64, 64, 10240, true, false))),
			FamilyFluxDev, "vae.", []part{{FamilyCLIPL, "text_encoders.clip_l.transformer.text_model."},
				{FamilyT5XXL, "text_encoders.t5xxl.transformer."}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := mustDetect(t, tc.ts)
			if m.Kind != KindCheckpoint || m.Family != tc.family || m.Unsupported != "" {
				t.Fatalf("kind %s family %s unsupported %q", m.Kind, m.Family, m.Unsupported)
			}
			if m.Diffusion.Prefix != "model.diffusion_model." || !m.Diffusion.Exact {
				t.Fatalf("diffusion prefix %q exact %v", m.Diffusion.Prefix, m.Diffusion.Exact)
			}
			if m.VAE == nil || m.VAE.Prefix != tc.vae {
				t.Fatalf("vae %+v", m.VAE)
			}
			var got []part
			for _, te := range m.TextEncoders {
				if !te.Exact {
					t.Errorf("%s not exact", te.Family)
				}
				got = append(got, part{te.Family, te.Prefix})
			}
			if !reflect.DeepEqual(got, tc.tes) {
				t.Fatalf("text encoders %v, want %v", got, tc.tes)
			}
		})
	}
}

func TestDetectErrors(t *testing.T) {
	if _, err := Detect(Input{}); !errors.Is(err, ErrUnknown) {
		t.Fatalf("empty: %v", err)
	}
	var junk tensors
	junk.add("model.layers.0.mlp.weight", 4, 4)
	if _, err := Detect(Input{Tensors: junk}); !errors.Is(err, ErrUnknown) || !strings.Contains(err.Error(), "model.layers.0.mlp.weight") {
		t.Fatalf("junk: %v", err)
	}
	// A recognised UNet with a tensor missing is an error naming it, not a panic.
	var broken tensors
	for _, ti := range tinyUNet.build() {
		if !strings.HasSuffix(ti.Name, "attn2.to_k.weight") {
			broken = append(broken, ti)
		}
	}
	if _, err := Detect(Input{Tensors: broken}); err == nil || !strings.Contains(err.Error(), "attn2.to_k.weight") {
		t.Fatalf("broken unet: %v", err)
	}
	// Scalar and odd shapes where matrices are expected do not panic.
	var odd tensors
	odd.add("input_blocks.0.0.weight")
	odd.add("double_blocks.0.img_attn.norm.key_norm.scale")
	odd.add("img_in.weight")
	if _, err := Detect(Input{Tensors: odd}); err == nil {
		t.Fatal("malformed flux accepted")
	}
	var ctrl tensors
	ctrl.prefixed("control_model.", tinyUNet.build())
	ctrl.add("control_model.input_hint_block.0.weight", 16, 3, 3, 3)
	if _, err := Detect(Input{Tensors: ctrl}); !errors.Is(err, ErrUnknown) {
		t.Fatalf("controlnet: %v", err)
	}
}
