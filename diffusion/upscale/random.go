package upscale

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"math/rand/v2"

	"github.com/forgeflow/forgeflow/internal/dtype"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

// Random checkpoints with the real key names of each architecture, for tests and
// benchmarks (no model is ever downloaded).

// RandomSpec describes a random upscale checkpoint.
type RandomSpec struct {
	// Arch is "ESRGAN", "Compact" or "SPAN".
	Arch string
	// Layout is ESRGAN's key layout: "new" (BasicSR / Real-ESRGAN, the default), "old"
	// (the original ESRGAN "model.N" sequence) or "bsrgan".
	Layout string
	// In and Out are the network's input and output channels (an ESRGAN with In = 4·Out
	// or 16·Out takes a pixel-unshuffled image).
	In, Out int
	// Features is nf (ESRGAN, Compact) or feature_channels (SPAN); Growth is ESRGAN's gc.
	Features, Growth int
	// Blocks is ESRGAN's RRDB count or Compact's num_conv.
	Blocks int
	// Scale is the network's own factor: 2^k upsampling convs (ESRGAN), the pixel
	// shuffle (Compact, SPAN).
	Scale int
	// Plus adds ESRGAN+'s conv1x1; NoNorm writes SPAN's "no_norm" buffer.
	Plus, NoNorm bool
}

// ESRGANx4 is the full-size 4× RRDBNet (RealESRGAN_x4plus, 4x-UltraSharp and most
// community ESRGAN models): 64 features, 23 blocks, growth 32.
func ESRGANx4() RandomSpec {
	return RandomSpec{Arch: "ESRGAN", In: 3, Out: 3, Features: 64, Growth: 32, Blocks: 23, Scale: 4}
}

// RandomTensor is one tensor of a random checkpoint: N(0, Std²) + Mean, drawn from a
// generator seeded by the seed and the name.
type RandomTensor struct {
	Name      string
	Shape     []int
	Std, Mean float64
}

// Values draws the tensor's values.
func (t RandomTensor) Values(seed uint64) []float32 {
	h := fnv.New64a()
	h.Write([]byte(t.Name))
	r := rand.New(rand.NewPCG(seed, h.Sum64()))
	n := 1
	for _, d := range t.Shape {
		n *= d
	}
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(t.Mean + t.Std*r.NormFloat64())
	}
	return v
}

type randomTensors []RandomTensor

// conv adds a conv's weight N(0, 1/fan_in) and bias N(0, 0.02²).
func (ts *randomTensors) conv(name string, out, in, k int, bias bool) {
	*ts = append(*ts, RandomTensor{Name: name + ".weight", Shape: []int{out, in, k, k}, Std: 1 / math.Sqrt(float64(in*k*k))})
	if bias {
		*ts = append(*ts, RandomTensor{Name: name + ".bias", Shape: []int{out}, Std: 0.02})
	}
}

// Tensors lists the spec's checkpoint tensors.
func (s RandomSpec) Tensors() ([]RandomTensor, error) {
	var ts randomTensors
	switch s.Arch {
	case "ESRGAN":
		k := int(math.Round(math.Log2(float64(s.Scale))))
		if 1<<k != s.Scale {
			return nil, fmt.Errorf("upscale: ESRGAN scale %d is not a power of 2", s.Scale)
		}
		nf, gc := s.Features, s.Growth
		names := esrganRandomNames(s.Layout, s.Blocks, k)
		ts.conv(names.first, nf, s.In, 3, true)
		for i := 0; i < s.Blocks; i++ {
			for j := 1; j <= 3; j++ {
				for c := 1; c <= 5; c++ {
					out := gc
					if c == 5 {
						out = nf
					}
					ts.conv(names.rdb(i, j, c), out, nf+(c-1)*gc, 3, true)
				}
				if s.Plus {
					ts.conv(names.rdb(i, j, 0), gc, nf, 1, false)
				}
			}
		}
		ts.conv(names.body, nf, nf, 3, true)
		for u := 1; u <= k; u++ {
			ts.conv(names.up(u), nf, nf, 3, true)
		}
		ts.conv(names.hr, nf, nf, 3, true)
		ts.conv(names.last, s.Out, nf, 3, true)
	case "Compact":
		nf := s.Features
		ts.conv("body.0", nf, s.In, 3, true)
		for i := 0; i <= s.Blocks; i++ {
			ts = append(ts, RandomTensor{Name: fmt.Sprintf("body.%d.weight", 2*i+1), Shape: []int{nf}, Std: 0.05, Mean: 0.25})
			if i < s.Blocks {
				ts.conv(fmt.Sprintf("body.%d", 2*i+2), nf, nf, 3, true)
			}
		}
		ts.conv(fmt.Sprintf("body.%d", 2*s.Blocks+2), s.Out*s.Scale*s.Scale, nf, 3, true)
	case "SPAN":
		nf := s.Features
		xc := func(p string, in, out int) {
			ts.conv(p+".sk", out, in, 1, true)
			ts.conv(p+".conv.0", 2*in, in, 1, true)
			ts.conv(p+".conv.1", 2*out, 2*in, 3, true)
			ts.conv(p+".conv.2", out, 2*out, 1, true)
			ts.conv(p+".eval_conv", out, in, 3, true)
		}
		xc("conv_1", s.In, nf)
		for b := 1; b <= 6; b++ {
			for c := 1; c <= 3; c++ {
				xc(fmt.Sprintf("block_%d.c%d_r", b, c), nf, nf)
			}
		}
		ts.conv("conv_cat", nf, 4*nf, 1, true)
		xc("conv_2", nf, nf)
		ts.conv("upsampler.0", s.Out*s.Scale*s.Scale, nf, 3, true)
		if s.NoNorm {
			ts = append(ts, RandomTensor{Name: "no_norm", Shape: []int{1}})
		}
	default:
		return nil, fmt.Errorf("upscale: no random %q checkpoint", s.Arch)
	}
	return ts, nil
}

// esrganKeys names an RRDBNet's layers in one layout.
type esrganKeys struct {
	first, body, hr, last string
	rdb                   func(block, rdb, conv int) string // conv 0: ESRGAN+'s conv1x1
	up                    func(u int) string
}

func esrganRandomNames(layout string, blocks, k int) esrganKeys {
	switch layout {
	case "old":
		return esrganKeys{
			first: "model.0", body: fmt.Sprintf("model.1.sub.%d", blocks),
			hr: fmt.Sprintf("model.%d", 3*k+2), last: fmt.Sprintf("model.%d", 3*k+4),
			rdb: func(b, r, c int) string {
				if c == 0 {
					return fmt.Sprintf("model.1.sub.%d.RDB%d.conv1x1", b, r)
				}
				return fmt.Sprintf("model.1.sub.%d.RDB%d.conv%d.0", b, r, c)
			},
			up: func(u int) string { return fmt.Sprintf("model.%d", 3*u) },
		}
	case "bsrgan":
		return esrganKeys{first: "conv_first", body: "trunk_conv", hr: "HRconv", last: "conv_last",
			rdb: func(b, r, c int) string { return fmt.Sprintf("RRDB_trunk.%d.RDB%d.conv%d", b, r, c) },
			up:  func(u int) string { return fmt.Sprintf("upconv%d", u) },
		}
	}
	return esrganKeys{first: "conv_first", body: "conv_body", hr: "conv_hr", last: "conv_last",
		rdb: func(b, r, c int) string { return fmt.Sprintf("body.%d.rdb%d.conv%d", b, r, c) },
		up:  func(u int) string { return fmt.Sprintf("conv_up%d", u) },
	}
}

// WriteRandom writes the spec's checkpoint as safetensors in dtype (F32, F16 or BF16).
func WriteRandom(w io.Writer, s RandomSpec, seed uint64, dtype weights.DType) error {
	ts, err := s.Tensors()
	if err != nil {
		return err
	}
	entries := make([]safetensors.Entry, len(ts))
	for i, t := range ts {
		shape := make([]int64, len(t.Shape))
		for j, d := range t.Shape {
			shape[j] = int64(d)
		}
		data, err := EncodeValues(t.Values(seed), dtype)
		if err != nil {
			return err
		}
		entries[i] = safetensors.Entry{Name: t.Name, DType: dtype, Shape: shape, Data: data}
	}
	return safetensors.Write(w, entries, nil)
}

// EncodeValues stores float32 values little-endian in dtype (F32, F16 or BF16).
func EncodeValues(v []float32, dt weights.DType) ([]byte, error) {
	switch dt {
	case weights.F32:
		b := make([]byte, 4*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
		}
		return b, nil
	case weights.F16, weights.BF16:
		b := make([]byte, 2*len(v))
		for i, x := range v {
			var u uint16
			if dt == weights.F16 {
				u = dtype.F32ToF16(x)
			} else {
				u = dtype.F32ToBF16(x)
			}
			binary.LittleEndian.PutUint16(b[2*i:], u)
		}
		return b, nil
	}
	return nil, fmt.Errorf("upscale: cannot write %s values", dt)
}
