package synth

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"strings"

	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

// Write writes the layout as a safetensors file with deterministic random weights in
// dtype (F16, BF16 or F32): matrices and kernels N(0, 1/fan_in), biases N(0, 0.02²),
// norm scales 1 + N(0, 0.02²), embeddings N(0, 0.02²) — values that keep activations in a
// sane range through every layer, so a sampling run on the model stays finite. Tensors
// are generated while they are written, so memory stays flat for multi-GB files.
func Write(w io.Writer, l Layout, dtype weights.DType, seed uint64) error {
	size := dtype.ElemSize()
	switch dtype {
	case weights.F16, weights.BF16, weights.F32:
	default:
		return fmt.Errorf("synth: unsupported dtype %s", dtype)
	}
	entries := make([]safetensors.Entry, len(l))
	for i, t := range l {
		t := t
		rng := rand.New(rand.NewPCG(seed, uint64(i)))
		entries[i] = safetensors.Entry{Name: t.Name, DType: dtype, Shape: t.Shape, WriteData: func(out io.Writer) error {
			bw := bufio.NewWriterSize(out, 1<<16)
			n := 1
			for _, d := range t.Shape {
				n *= int(d)
			}
			mean, std := initDist(t)
			buf := make([]byte, size)
			for k := 0; k < n; k++ {
				v := float32(mean + std*rng.NormFloat64())
				switch dtype {
				case weights.F16:
					binary.LittleEndian.PutUint16(buf, weights.F32ToF16(v))
				case weights.BF16:
					binary.LittleEndian.PutUint16(buf, weights.F32ToBF16(v))
				default:
					binary.LittleEndian.PutUint32(buf, math.Float32bits(v))
				}
				if _, err := bw.Write(buf); err != nil {
					return err
				}
			}
			return bw.Flush()
		}}
	}
	return safetensors.Write(w, entries, map[string]string{"forgeflow.synth": "random weights, not a trained model"})
}

// initDist returns the mean and standard deviation a tensor's values are drawn with.
func initDist(t Tensor) (mean, std float64) {
	switch {
	case strings.Contains(t.Name, "embedding"):
		return 0, 0.02
	case len(t.Shape) == 1 && strings.HasSuffix(t.Name, ".weight"):
		return 1, 0.02 // norm scale
	case len(t.Shape) == 1:
		return 0, 0.02 // bias
	}
	fan := 1
	for _, d := range t.Shape[1:] {
		fan *= int(d)
	}
	return 0, 1 / math.Sqrt(float64(fan))
}
