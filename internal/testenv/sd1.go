package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// UNet is a model case of the golden unet family: a UNetModel under WeightPrefix, run
// through the BaseModel wrapper the case describes.
type UNet struct {
	Case
	Prefix string
	// Heads and HeadDim are unet_config's num_heads and num_head_channels; one of them
	// is positive.
	Heads, HeadDim         int
	InChannels, ContextDim int
	// ADM is adm_in_channels, 0 for a UNet without a class/ADM input (SD1.x).
	ADM int
	// Sampling is the wrapper's model sampling (config.wrapper).
	Sampling ModelSampling
}

// CLIP is a case of the golden clip family: a CLIP text model under Prefix with its
// configuration and special tokens, and the prompts whose encodings the case holds.
type CLIP struct {
	Case
	Prefix                string
	Hidden, Heads, Layers int
	Activation            string
	EOS                   int
	Start, End, Pad       int
	Prompts               map[string]string
}

// VAE is a case of the golden vae family: an AutoencoderKL under Prefix.
type VAE struct {
	Case
	Prefix         string
	LatentChannels int
}

// GoldenUNets returns the model cases of the unet family (cases that hold a UNet, not
// the parameter-free encode_adm ones).
func GoldenUNets(t testing.TB) []UNet {
	t.Helper()
	_, cases := GoldenCases[Case](t, "unet")
	var out []UNet
	for _, c := range cases {
		if !c.Has("config.unet_config") {
			continue
		}
		u := UNet{Case: c}
		var cfg struct {
			Heads      int  `json:"num_heads"`
			HeadDim    int  `json:"num_head_channels"`
			In         int  `json:"in_channels"`
			Context    int  `json:"context_dim"`
			ADM        *int `json:"adm_in_channels"`
			ModelChans int  `json:"model_channels"`
		}
		must(t, c.Decode("config.unet_config", &cfg))
		must(t, c.Decode("weight_prefix", &u.Prefix))
		u.Heads, u.HeadDim, u.InChannels, u.ContextDim = cfg.Heads, cfg.HeadDim, cfg.In, cfg.Context
		if cfg.ADM != nil {
			u.ADM = *cfg.ADM
		}
		if u.Heads <= 0 && u.HeadDim <= 0 {
			t.Fatal(c.FieldError("config.unet_config", "neither num_heads nor num_head_channels is positive"))
		}
		var err error
		u.Sampling, err = c.ModelSampling("config.wrapper")
		must(t, err)
		out = append(out, u)
	}
	return out
}

// GoldenCLIPs returns the cases of the clip family.
func GoldenCLIPs(t testing.TB) []CLIP {
	t.Helper()
	_, cases := GoldenCases[Case](t, "clip")
	out := make([]CLIP, 0, len(cases))
	for _, c := range cases {
		var opts map[string]struct {
			Hidden int    `json:"hidden_size"`
			Heads  int    `json:"num_attention_heads"`
			Layers int    `json:"num_hidden_layers"`
			Act    string `json:"hidden_act"`
			EOS    *int   `json:"eos_token_id"`
		}
		must(t, c.Decode("config.model_options", &opts))
		if len(opts) != 1 {
			t.Fatal(c.FieldError("config.model_options", "holds %d model configs, want one text model", len(opts)))
		}
		k := CLIP{Case: c}
		for name, o := range opts {
			if !strings.HasSuffix(name, "_model_config") || o.Hidden <= 0 || o.Heads <= 0 || o.Layers <= 0 || o.Act == "" || o.EOS == nil {
				t.Fatal(c.FieldError("config.model_options."+name, "needs hidden_size, num_attention_heads, num_hidden_layers, hidden_act and eos_token_id"))
			}
			k.Hidden, k.Heads, k.Layers, k.Activation, k.EOS = o.Hidden, o.Heads, o.Layers, o.Act, *o.EOS
		}
		var special struct {
			Start, End, Pad *int
		}
		must(t, c.Decode("config.special_tokens", &special))
		if special.Start == nil || special.End == nil || special.Pad == nil {
			t.Fatal(c.FieldError("config.special_tokens", "needs start, end and pad"))
		}
		k.Start, k.End, k.Pad = *special.Start, *special.End, *special.Pad
		must(t, c.Decode("prompts", &k.Prompts))
		var err error
		k.Prefix, err = c.WeightPrefix("embeddings.token_embedding.weight")
		must(t, err)
		out = append(out, k)
	}
	return out
}

// GoldenVAEs returns the cases of the vae family.
func GoldenVAEs(t testing.TB) []VAE {
	t.Helper()
	_, cases := GoldenCases[Case](t, "vae")
	out := make([]VAE, 0, len(cases))
	for _, c := range cases {
		v := VAE{Case: c}
		must(t, c.Decode("weight_prefix", &v.Prefix))
		must(t, c.Decode("config.ddconfig.z_channels", &v.LatentChannels))
		out = append(out, v)
	}
	return out
}

// SD1 is an SD1.x-shaped pipeline assembled from golden cases: a UNet without an ADM
// input, a CLIP whose hidden size is the UNet's context size, the tokenizer vocabulary
// and, where the set has one, a VAE whose latent has the UNet's channels (VAE.File is
// empty otherwise).
type SD1 struct {
	UNet     UNet
	CLIP     CLIP
	VAE      VAE
	VocabDir string
}

// GoldenSD1 picks the first such pipeline in manifest order. A golden set without one
// skips the test, naming what is missing: the cases are fixtures of their own
// families, not all sets pair them.
func GoldenSD1(t testing.TB) SD1 {
	t.Helper()
	clips := GoldenCLIPs(t)
	var tried []string
	for _, u := range GoldenUNets(t) {
		if u.ADM != 0 {
			continue
		}
		for _, c := range clips {
			if c.Hidden != u.ContextDim {
				continue
			}
			fx := SD1{UNet: u, CLIP: c, VocabDir: GoldenVocabDir(t)}
			if _, err := os.Stat(filepath.Join(GoldenDir(t), "vae", "manifest.json")); err != nil {
				return fx
			}
			for _, v := range GoldenVAEs(t) {
				if v.LatentChannels == u.InChannels {
					fx.VAE = v
					break
				}
			}
			return fx
		}
		tried = append(tried, fmt.Sprintf("%s (context %d)", u.Name, u.ContextDim))
	}
	t.Skipf("testenv: the golden set pairs no SD1.x-shaped unet %v with a clip case of that hidden size", tried)
	return SD1{}
}

// must fails t with err.
func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
