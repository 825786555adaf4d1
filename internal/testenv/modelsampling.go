package testenv

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// ModelSampling is the model sampling a golden case describes. Its fields are those of
// diffusion/sampling's Config (testenv imports nothing of the project), so a test builds
// it with
//
//	spec, err := c.ModelSampling("config.wrapper")
//	ms, err := sampling.New(sampling.Config(spec))
//
// Zero fields mean ComfyUI's defaults for the kind.
type ModelSampling struct {
	// Kind is "discrete", "discrete_flow" or "flux".
	Kind string
	// Prediction is "eps", "v_prediction" or "const".
	Prediction             string
	BetaSchedule           string
	LinearStart, LinearEnd float64
	Timesteps              int
	ZSNR                   bool
	Shift                  float64
	Multiplier             float64
}

// ModelSampling reads the model sampling that field describes. The field is either
// ComfyUI's own description, a string naming the model-sampling class, the prediction
// (model) type and inline settings:
//
//	"ModelSamplingDiscrete+EPS (SD1.5 linear betas)"
//	"ModelSamplingDiscrete+V_PREDICTION (cosine betas)"
//	"ModelSamplingFlux+CONST shift 1.15"
//	"ModelSamplingDiscreteFlow+CONST shift 3.0"
//	"comfy.model_base.BaseModel(ModelType.EPS), ModelSamplingDiscrete SD1.5 betas"
//
// or an object with such a string under "model_sampling" beside ComfyUI's
// sampling_settings (beta_schedule, linear_start, linear_end, timesteps, zsnr, shift,
// multiplier) and the ModelSamplingFlux node's inputs (max_shift, base_shift, width,
// height, whose result is the recorded shift). What it cannot interpret (an unknown
// class or prediction type, an unknown setting, settings that contradict each other) is
// an error naming the field.
func (c *Case) ModelSampling(field string) (ModelSampling, error) {
	raw, err := c.lookup(field)
	if err != nil {
		return ModelSampling{}, err
	}
	var desc string
	if json.Unmarshal(raw, &desc) == nil {
		ms, err := parseModelSampling(desc)
		if err != nil {
			return ModelSampling{}, c.FieldError(field, "%v", err)
		}
		return ms, nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
		return ModelSampling{}, c.FieldError(field, "neither a model-sampling description nor an object holding one")
	}
	sub := func(k string) string { return field + "." + k }
	if err := json.Unmarshal(obj["model_sampling"], &desc); err != nil {
		return ModelSampling{}, c.FieldError(sub("model_sampling"), "missing or not a string")
	}
	ms, err := parseModelSampling(desc)
	if err != nil {
		return ModelSampling{}, c.FieldError(sub("model_sampling"), "%v", err)
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if err := ms.setting(k, obj[k]); err != nil {
			return ModelSampling{}, c.FieldError(sub(k), "%v", err)
		}
	}
	if _, ok := obj["width"]; ok && !hasKey(obj, "shift") {
		return ModelSampling{}, c.FieldError(sub("shift"), "missing: the ModelSamplingFlux node's shift for width × height")
	}
	if err := ms.check(); err != nil {
		return ModelSampling{}, c.FieldError(field, "%v", err)
	}
	return ms, nil
}

func hasKey(m map[string]json.RawMessage, k string) bool { _, ok := m[k]; return ok }

// setting applies one sampling_settings entry; an inline value in the description must
// agree with it.
func (ms *ModelSampling) setting(key string, raw json.RawMessage) error {
	num := func(dst *float64) error {
		var v float64
		if err := json.Unmarshal(raw, &v); err != nil {
			return fmt.Errorf("not a number: %s", bytes.TrimSpace(raw))
		}
		if *dst != 0 && *dst != v {
			return fmt.Errorf("%v contradicts the description's %v", v, *dst)
		}
		*dst = v
		return nil
	}
	switch key {
	case "model_sampling", "used_by":
		return nil
	case "max_shift", "base_shift", "width", "height":
		// The ModelSamplingFlux node's inputs: the shift they give is recorded as "shift".
		var v float64
		if err := json.Unmarshal(raw, &v); err != nil {
			return fmt.Errorf("not a number: %s", bytes.TrimSpace(raw))
		}
		return nil
	case "beta_schedule":
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return fmt.Errorf("not a string: %s", bytes.TrimSpace(raw))
		}
		if ms.BetaSchedule != "" && ms.BetaSchedule != s {
			return fmt.Errorf("%q contradicts the description's %q betas", s, ms.BetaSchedule)
		}
		ms.BetaSchedule = s
		return nil
	case "linear_start":
		return num(&ms.LinearStart)
	case "linear_end":
		return num(&ms.LinearEnd)
	case "shift":
		return num(&ms.Shift)
	case "multiplier":
		return num(&ms.Multiplier)
	case "timesteps":
		var n int
		if err := json.Unmarshal(raw, &n); err != nil || n < 1 {
			return fmt.Errorf("not a positive integer: %s", bytes.TrimSpace(raw))
		}
		if ms.Timesteps != 0 && ms.Timesteps != n {
			return fmt.Errorf("%d contradicts the description's %d", n, ms.Timesteps)
		}
		ms.Timesteps = n
		return nil
	case "zsnr":
		if err := json.Unmarshal(raw, &ms.ZSNR); err != nil {
			return fmt.Errorf("not a boolean: %s", bytes.TrimSpace(raw))
		}
		return nil
	}
	return fmt.Errorf("unknown model-sampling setting")
}

var (
	msClassRE = regexp.MustCompile(`ModelSampling[A-Za-z0-9_]*`)
	msTypeRE  = regexp.MustCompile(`(?:\+|ModelType\.)([A-Z][A-Z0-9_]*)`)
	msParamRE = regexp.MustCompile(`\b(shift|multiplier|timesteps|linear_start|linear_end)\s*[=:]?\s*([-+]?[0-9][0-9.eE+-]*)`)
	msBetasRE = regexp.MustCompile(`\b([a-z][a-z_0-9]*)\s+betas\b`)
	msZSNRRE  = regexp.MustCompile(`\bzsnr\b`)
)

// msClasses maps ComfyUI's model-sampling classes (and the nodes that install them) to
// a kind and the multiplier the node sets.
var msClasses = map[string]struct {
	kind       string
	multiplier float64
}{
	"ModelSamplingDiscrete":     {"discrete", 0},
	"ModelSamplingDiscreteFlow": {"discrete_flow", 0},
	"ModelSamplingSD3":          {"discrete_flow", 1000},
	"ModelSamplingAuraFlow":     {"discrete_flow", 1},
	"ModelSamplingFlux":         {"flux", 0},
}

// msTypes maps ComfyUI's ModelType names and prediction classes to a prediction, and the
// model types that imply a class to it (comfy.model_base.model_sampling).
var msTypes = map[string]struct{ pred, kind string }{
	"EPS":          {"eps", "discrete"},
	"V_PREDICTION": {"v_prediction", "discrete"},
	"CONST":        {"const", ""},
	"FLOW":         {"const", "discrete_flow"},
	"FLUX":         {"const", "flux"},
}

// betaSchedules are the names make_beta_schedule knows (ComfyUI 0.3.64).
var betaSchedules = []string{"linear", "cosine", "squaredcos_cap_v2", "sqrt_linear", "sqrt"}

// parseModelSampling reads a description string (see Case.ModelSampling).
func parseModelSampling(desc string) (ModelSampling, error) {
	var ms ModelSampling
	for _, name := range msClassRE.FindAllString(desc, -1) {
		cl, ok := msClasses[name]
		if !ok {
			return ms, fmt.Errorf("cannot interpret %q: model-sampling class %s is not supported", desc, name)
		}
		if ms.Kind != "" && ms.Kind != cl.kind {
			return ms, fmt.Errorf("cannot interpret %q: it names both %s and %s model sampling", desc, ms.Kind, cl.kind)
		}
		ms.Kind = cl.kind
		if cl.multiplier != 0 {
			ms.Multiplier = cl.multiplier
		}
	}
	for _, m := range msTypeRE.FindAllStringSubmatch(desc, -1) {
		ty, ok := msTypes[m[1]]
		if !ok {
			return ms, fmt.Errorf("cannot interpret %q: prediction type %s is not supported (EPS, V_PREDICTION, CONST, FLOW, FLUX)", desc, m[1])
		}
		if ms.Prediction != "" && ms.Prediction != ty.pred {
			return ms, fmt.Errorf("cannot interpret %q: it names both %s and %s prediction", desc, ms.Prediction, ty.pred)
		}
		ms.Prediction = ty.pred
		if ms.Kind == "" {
			ms.Kind = ty.kind
		}
	}
	if ms.Kind == "" {
		return ms, fmt.Errorf("cannot interpret %q: no model-sampling class (ModelSamplingDiscrete, ModelSamplingDiscreteFlow, ModelSamplingFlux, ...) or model type", desc)
	}
	for _, m := range msParamRE.FindAllStringSubmatch(desc, -1) {
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			return ms, fmt.Errorf("cannot interpret %q: %s %q is not a number", desc, m[1], m[2])
		}
		switch m[1] {
		case "shift":
			ms.Shift = v
		case "multiplier":
			ms.Multiplier = v
		case "linear_start":
			ms.LinearStart = v
		case "linear_end":
			ms.LinearEnd = v
		case "timesteps":
			if v != float64(int(v)) || v < 1 {
				return ms, fmt.Errorf("cannot interpret %q: timesteps %v is not a positive integer", desc, v)
			}
			ms.Timesteps = int(v)
		}
	}
	if m := msBetasRE.FindStringSubmatch(desc); m != nil {
		ms.BetaSchedule = m[1]
	}
	ms.ZSNR = msZSNRRE.MatchString(desc)
	if err := ms.check(); err != nil {
		return ms, fmt.Errorf("cannot interpret %q: %v", desc, err)
	}
	return ms, nil
}

// check rejects settings that do not belong to the kind.
func (ms *ModelSampling) check() error {
	switch ms.Kind {
	case "discrete":
		if ms.Prediction == "" {
			return fmt.Errorf("discrete model sampling without a prediction type (EPS, V_PREDICTION)")
		}
		if ms.Prediction == "const" {
			return fmt.Errorf("discrete model sampling with CONST prediction")
		}
		if ms.Shift != 0 || ms.Multiplier != 0 {
			return fmt.Errorf("discrete model sampling takes no shift or multiplier")
		}
		if ms.BetaSchedule != "" && !slices.Contains(betaSchedules, ms.BetaSchedule) {
			return fmt.Errorf("unknown beta schedule %q (%s)", ms.BetaSchedule, strings.Join(betaSchedules, ", "))
		}
	case "discrete_flow", "flux":
		if ms.Prediction == "" {
			ms.Prediction = "const"
		}
		if ms.Prediction != "const" {
			return fmt.Errorf("%s model sampling predicts a velocity (CONST), not %s", ms.Kind, strings.ToUpper(ms.Prediction))
		}
		if ms.BetaSchedule != "" || ms.LinearStart != 0 || ms.LinearEnd != 0 || ms.ZSNR {
			return fmt.Errorf("%s model sampling has no beta schedule", ms.Kind)
		}
		if ms.Kind == "flux" && ms.Multiplier != 0 {
			return fmt.Errorf("flux model sampling takes no multiplier")
		}
	}
	return nil
}
