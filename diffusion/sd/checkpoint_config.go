package sd

import (
	"errors"
	"fmt"
	"io"
	"os"

	"go.yaml.in/yaml/v3"

	"github.com/forgeflow/forgeflow/diffusion/sampling"
)

// Original-repository inference configs (models/configs/v1-inference.yaml,
// v2-inference-v.yaml, …) as ComfyUI 0.3.64's deprecated CheckpointLoader uses them
// (comfy/sd.py load_checkpoint): the checkpoint itself is loaded and detected as
// CheckpointLoaderSimple does; the config then decides two things only. With
// model.params.parameterization "v" the model samples as v-prediction
// (ModelSamplingDiscrete with the model's β schedule); with
// model.params.cond_stage_config.params.layer_idx the CLIP stops at that layer
// (clip_layer, what CLIPSetLastLayer sets). Everything else in the file (UNet and VAE
// sizes, scale_factor) is ignored there too: the sizes come from the weights.

// maxConfigBytes bounds a config file: the shipped ones are about 2 KB.
const maxConfigBytes = 1 << 20

// CheckpointConfig is what an inference config changes in a loaded checkpoint.
type CheckpointConfig struct {
	// VPrediction is model.params.parameterization == "v".
	VPrediction bool
	// LayerIdx is cond_stage_config.params.layer_idx (negative: counted from the last
	// layer), nil when the config sets none.
	LayerIdx *int
}

// configError is a config file that does not parse or lacks a section ComfyUI reads.
type configError struct {
	path string
	err  error
}

func (e *configError) Error() string {
	return fmt.Sprintf("sd: checkpoint config %s: %v", e.path, e.err)
}
func (e *configError) Unwrap() error { return e.err }

// ReadCheckpointConfig reads an inference config file.
func ReadCheckpointConfig(path string) (*CheckpointConfig, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("sd: checkpoint config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigBytes+1))
	if err != nil {
		return nil, &configError{path, err}
	}
	if len(data) > maxConfigBytes {
		return nil, &configError{path, fmt.Errorf("larger than %d bytes", maxConfigBytes)}
	}
	return ParseCheckpointConfig(path, data)
}

// ParseCheckpointConfig parses an inference config; name is used in errors. As
// ComfyUI, a config without model.params or model.params.cond_stage_config is an
// error; the other keys are optional.
func ParseCheckpointConfig(name string, data []byte) (*CheckpointConfig, error) {
	var doc struct {
		Model *struct {
			Params *struct {
				Parameterization any `yaml:"parameterization"`
				CondStage        *struct {
					Params map[string]any `yaml:"params"`
				} `yaml:"cond_stage_config"`
			} `yaml:"params"`
		} `yaml:"model"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, &configError{name, err}
	}
	switch {
	case doc.Model == nil || doc.Model.Params == nil:
		return nil, &configError{name, errors.New("no model.params section")}
	case doc.Model.Params.CondStage == nil:
		return nil, &configError{name, errors.New("no model.params.cond_stage_config section")}
	}
	p := doc.Model.Params
	c := &CheckpointConfig{VPrediction: p.Parameterization == "v"}
	if v, ok := p.CondStage.Params["layer_idx"]; ok && v != nil {
		idx, ok := v.(int)
		if !ok {
			return nil, &configError{name, fmt.Errorf("cond_stage_config.params.layer_idx %v is not an integer", v)}
		}
		if idx >= 0 {
			// ComfyUI would index the hidden states from the first layer; no shipped
			// config does, and CLIP.Layer counts from the last.
			return nil, &configError{name, fmt.Errorf("cond_stage_config.params.layer_idx %d: only negative layers (counted from the last) are supported", idx)}
		}
		c.LayerIdx = &idx
	}
	return c, nil
}

// Apply returns the parts of ck as the config changes them; ck's own parts are left
// as they are (they may be shared through the model cache). A nil part stays nil.
func (c *CheckpointConfig) Apply(ck *Checkpoint) (*Model, *CLIP, error) {
	m, cl := ck.Model, ck.CLIP
	if c.VPrediction && m != nil {
		// ModelSamplingDiscrete with V_PREDICTION over the model config's β schedule:
		// scaled-linear 0.00085…0.012 in 1000 steps for every family, rescaled to zero
		// terminal SNR when the checkpoint carries the ztsnr marker.
		ms := sampling.ModelSampling(sampling.NewSD(sampling.VPrediction))
		if ck.Detected != nil && ck.Detected.Diffusion != nil && ck.Detected.Diffusion.Variant == "zsnr" {
			var err error
			if ms, err = sampling.NewDiscreteZSNR(sampling.VPrediction, 0.00085, 0.012, 1000); err != nil {
				return nil, nil, fmt.Errorf("sd: checkpoint config: %w", err)
			}
		}
		m = m.WithSampling(ms)
	}
	if c.LayerIdx != nil && cl != nil {
		cl = cl.WithLayer(*c.LayerIdx)
	}
	return m, cl, nil
}
