package sd

import (
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/forgeflow/forgeflow/diffusion/mmdit"
	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

// WriteRandomSD3ScaledFP8 writes the spec's all-in-one checkpoint as ComfyUI's "fp8
// scaled" SD3.5 checkpoints (sd3.5_large_fp8_scaled) lay it out: the linear matrices of
// the MMDiT (under model.diffusion_model.) and of T5 stored float8 e4m3fn after division
// by their scale (largest magnitude / 448), the scale as <layer>.scale_weight (an F32
// scalar), a scaled_fp8 marker under both prefixes; every other tensor in s.DType.
func WriteRandomSD3ScaledFP8(w io.Writer, s RandomSD3Spec) error {
	ts, err := s.Tensors()
	if err != nil {
		return err
	}
	markers := []string{unetPrefix}
	if s.T5.DModel > 0 {
		markers = append(markers, sd3T5Prefix)
	}
	return writeRandomScaledFP8(w, ts, s.Seed, s.DType, func(name string) bool {
		rest, ok := strings.CutPrefix(name, unetPrefix)
		return ok && mmdit.LinearParam(rest)
	}, markers)
}

// WriteRandomFluxScaledFP8 writes the spec's all-in-one Flux checkpoint in the same
// fp8-scaled layout: every matrix of the transformer and of T5 scaled.
func WriteRandomFluxScaledFP8(w io.Writer, s RandomFluxSpec) error {
	if err := checkRandomFlux(s); err != nil {
		return err
	}
	ts, err := s.Tensors()
	if err != nil {
		return err
	}
	markers := []string{unetPrefix}
	if s.T5.DModel > 0 {
		markers = append(markers, fluxT5Prefix)
	}
	return writeRandomScaledFP8(w, ts, s.Seed, s.DType, func(name string) bool {
		return strings.HasPrefix(name, unetPrefix)
	}, markers)
}

// writeRandomScaledFP8 writes ts with the 2-D ".weight" tensors that model reports (the
// diffusion model's linear layers) and T5's linear matrices as float8 e4m3fn over their
// scale, a scale_weight each, and the scaled_fp8 markers; the rest in dtype.
func writeRandomScaledFP8(w io.Writer, ts []RandomTensor, seed uint64, dtype weights.DType, model func(name string) bool, markers []string) error {
	if dtype == "" {
		dtype = weights.F16
	}
	g, ok := map[weights.DType]gpu.DType{weights.F32: gpu.F32, weights.F16: gpu.F16, weights.BF16: gpu.BF16}[dtype]
	if !ok {
		return fmt.Errorf("sd: random checkpoint dtype %s is not F32, F16 or BF16", dtype)
	}
	scaled := func(t RandomTensor) bool {
		if len(t.Shape) != 2 || !strings.HasSuffix(t.Name, ".weight") {
			return false
		}
		if model(t.Name) {
			return true
		}
		rest, ok := strings.CutPrefix(t.Name, sd3T5Prefix)
		return ok && rest != "shared.weight" && !strings.HasSuffix(rest, ".relative_attention_bias.weight")
	}
	encode := func(d gpu.DType, v []float32) ([]byte, error) {
		size, err := d.StorageBytes(len(v))
		if err != nil {
			return nil, err
		}
		buf := make([]byte, size)
		return buf, gpu.EncodeFloat32(d, buf, v)
	}
	shapeOf := func(t RandomTensor) []int64 {
		shape := make([]int64, len(t.Shape))
		for j, d := range t.Shape {
			shape[j] = int64(d)
		}
		return shape
	}
	var es []safetensors.Entry
	for _, t := range ts {
		if !scaled(t) {
			es = append(es, safetensors.Entry{Name: t.Name, DType: dtype, Shape: shapeOf(t), WriteData: func(w io.Writer) error {
				b, err := encode(g, t.Values(seed))
				if err != nil {
					return err
				}
				_, err = w.Write(b)
				return err
			}})
			continue
		}
		var amax float64
		for _, x := range t.Values(seed) {
			amax = max(amax, math.Abs(float64(x)))
		}
		scale := float32(amax / 448)
		if scale == 0 {
			scale = 1
		}
		layer := strings.TrimSuffix(t.Name, "weight")
		one, err := encode(gpu.F32, []float32{scale})
		if err != nil {
			return err
		}
		es = append(es, safetensors.Entry{Name: t.Name, DType: weights.F8_E4M3, Shape: shapeOf(t), WriteData: func(w io.Writer) error {
			v := t.Values(seed)
			for i := range v {
				v[i] /= scale
			}
			b, err := encode(gpu.F8E4M3FN, v)
			if err != nil {
				return err
			}
			_, err = w.Write(b)
			return err
		}}, safetensors.Entry{Name: layer + "scale_weight", DType: weights.F32, Shape: []int64{}, Data: one})
	}
	for _, p := range markers {
		es = append(es, safetensors.Entry{Name: p + statedict.ScaledFP8Marker, DType: weights.F8_E4M3, Shape: []int64{0}, Data: []byte{}})
	}
	safetensors.SortEntries(es)
	return safetensors.Write(w, es, map[string]string{"forgeflow": "random weights, scaled fp8"})
}
