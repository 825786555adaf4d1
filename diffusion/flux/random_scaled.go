package flux

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"strings"
	"sync"

	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

// WriteRandomScaledFP8 writes the spec's model as ComfyUI's "fp8 scaled" diffusion
// models are laid out: every matrix but img_in's stored in float8 d (F8E4M3FN or
// F8E5M2) after division by its scale (the largest magnitude over the format's largest
// value), the scale as <layer>.scale_weight and a unit <layer>.scale_input (F32 scalars),
// img_in, the vectors and the biases in BF16, and the scaled_fp8 marker. Scaling needs
// each matrix's largest value first, so its rows are generated twice.
func WriteRandomScaledFP8(w io.Writer, s RandomSpec, d gpu.DType) error {
	var top float64
	switch d {
	case gpu.F8E4M3FN:
		top = 448
	case gpu.F8E5M2:
		top = 57344
	default:
		return fmt.Errorf("flux: scaled fp8 dtype %s is not a float8 type", d)
	}
	ts, err := s.Tensors()
	if err != nil {
		return err
	}
	encode := func(dt gpu.DType, scale float32) func([]float32) ([]byte, error) {
		return func(v []float32) ([]byte, error) {
			if scale != 1 {
				for i := range v {
					v[i] /= scale
				}
			}
			n, err := dt.StorageBytes(len(v))
			if err != nil {
				return nil, err
			}
			b := make([]byte, n)
			return b, gpu.EncodeFloat32(dt, b, v)
		}
	}
	scalar := func(name string, v float32) safetensors.Entry {
		return safetensors.Entry{Name: name, DType: weights.F32, Shape: []int64{},
			Data: binary.LittleEndian.AppendUint32(nil, math.Float32bits(v))}
	}
	var es []safetensors.Entry
	for _, t := range ts {
		shape := make([]int64, len(t.Shape))
		for j, n := range t.Shape {
			shape[j] = int64(n)
		}
		if len(t.Shape) != 2 || strings.HasPrefix(t.key, "img_in.") {
			es = append(es, safetensors.Entry{Name: t.Name, DType: weights.BF16, Shape: shape, WriteData: func(w io.Writer) error {
				return writeChunks(w, t, s.Seed, encode(gpu.BF16, 1))
			}})
			continue
		}
		var amax float64
		var mu sync.Mutex // writeChunks encodes chunks concurrently
		if err := writeChunks(io.Discard, t, s.Seed, func(v []float32) ([]byte, error) {
			m := 0.0
			for _, x := range v {
				m = max(m, math.Abs(float64(x)))
			}
			mu.Lock()
			amax = max(amax, m)
			mu.Unlock()
			return nil, nil
		}); err != nil {
			return err
		}
		scale := float32(amax / top)
		if scale == 0 {
			scale = 1
		}
		layer := strings.TrimSuffix(t.Name, "weight")
		es = append(es, safetensors.Entry{Name: t.Name, DType: weights.DType(d.String()), Shape: shape, WriteData: func(w io.Writer) error {
			return writeChunks(w, t, s.Seed, encode(d, scale))
		}}, scalar(layer+"scale_weight", scale), scalar(layer+"scale_input", 1))
	}
	es = append(es, safetensors.Entry{Name: s.Prefix + "scaled_fp8", DType: weights.DType(d.String()), Shape: []int64{0}, Data: []byte{}})
	safetensors.SortEntries(es)
	return safetensors.Write(w, es, map[string]string{"forgeflow": "random weights, scaled fp8"})
}
