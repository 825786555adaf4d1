// Package loratest writes LoRA and LyCORIS files with random values for tests: every
// adapter type and key spelling diffusion/lora reads, for any module names and shapes.
// forgeflow itself never writes LoRAs; its tests and the reference-peer fixtures need
// small ones of each kind.
package loratest

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"

	"github.com/forgeflow/forgeflow/internal/dtype"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

// Style is a spelling of a LoRA's up/down pair (weight_adapter/lora.py).
type Style int

const (
	Kohya        Style = iota // .lora_up.weight / .lora_down.weight
	PEFT                      // .lora_B.weight / .lora_A.weight
	DiffusersOld              // _lora.up.weight / _lora.down.weight (attention processors)
	Diffusers                 // .lora.up.weight / .lora.down.weight
	Transformers              // .lora_linear_layer.up.weight / .down.weight
	Mochi                     // .lora_B / .lora_A
	PEFTDefault               // .lora_B.default.weight / .lora_A.default.weight
)

var styleNames = map[Style][2]string{
	Kohya: {".lora_up.weight", ".lora_down.weight"}, PEFT: {".lora_B.weight", ".lora_A.weight"},
	DiffusersOld: {"_lora.up.weight", "_lora.down.weight"}, Diffusers: {".lora.up.weight", ".lora.down.weight"},
	Transformers: {".lora_linear_layer.up.weight", ".lora_linear_layer.down.weight"},
	Mochi:        {".lora_B", ".lora_A"}, PEFTDefault: {".lora_B.default.weight", ".lora_A.default.weight"},
}

// File collects tensors; Write stores them as safetensors in name order.
type File struct {
	r       *rand.Rand
	dtype   weights.DType
	tensors map[string]tensor
}

type tensor struct {
	shape []int
	v     []float32
}

// New starts a file whose random values come from seed, stored as F32.
func New(seed uint64) *File {
	return &File{r: rand.New(rand.NewPCG(seed, 0x10ea)), dtype: weights.F32, tensors: map[string]tensor{}}
}

// DType sets the dtype tensors are stored in (F32, F16 or BF16).
func (f *File) DType(d weights.DType) *File {
	f.dtype = d
	return f
}

// Random adds a tensor of N(0, scale²) values.
func (f *File) Random(name string, scale float64, shape ...int) {
	n := 1
	for _, d := range shape {
		n *= d
	}
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(scale * f.r.NormFloat64())
	}
	f.Put(name, v, shape...)
}

// Put adds a tensor of the given values.
func (f *File) Put(name string, v []float32, shape ...int) {
	f.tensors[name] = tensor{append([]int(nil), shape...), v}
}

// Alpha adds module's alpha scalar (shape []), as kohya writes it.
func (f *File) Alpha(module string, alpha float64) {
	f.Put(module+".alpha", []float32{float32(alpha)})
}

// LoRA adds an up/down pair in the given spelling: down (rank, in…), up (out, rank) or,
// for a convolution (in has three dims: in, kh, kw), up (out, rank, 1, 1). alpha ≤ 0
// writes none.
func (f *File) LoRA(module string, s Style, out, rank int, alpha float64, in ...int) {
	names := styleNames[s]
	f.Random(module+names[1], 0.5, append([]int{rank}, in...)...)
	up := []int{out, rank}
	if len(in) == 3 {
		up = append(up, 1, 1)
	}
	f.Random(module+names[0], 0.5, up...)
	if alpha > 0 {
		f.Alpha(module, alpha)
	}
}

// LoConTucker adds a LyCORIS LoCon convolution with a Tucker core: down (rank, in, 1,
// 1), mid (rank, rank, k, k), up (out, rank, 1, 1), kohya spelling.
func (f *File) LoConTucker(module string, out, in, k, rank int, alpha float64) {
	f.Random(module+".lora_down.weight", 0.5, rank, in, 1, 1)
	f.Random(module+".lora_mid.weight", 0.5, rank, rank, k, k)
	f.Random(module+".lora_up.weight", 0.5, out, rank, 1, 1)
	if alpha > 0 {
		f.Alpha(module, alpha)
	}
}

// LoHa adds a LoHa module for a weight (out, in) or, with k > 0, a convolution
// (out, in, k, k) through Tucker cores t1, t2 (rank, rank, k, k) and factors
// w_a (rank, out), w_b (rank, in).
func (f *File) LoHa(module string, out, in, k, rank int, alpha float64) {
	for _, n := range []string{"1", "2"} {
		if k > 0 {
			f.Random(module+".hada_t"+n, 0.5, rank, rank, k, k)
			f.Random(module+".hada_w"+n+"_a", 0.5, rank, out)
		} else {
			f.Random(module+".hada_w"+n+"_a", 0.5, out, rank)
		}
		f.Random(module+".hada_w"+n+"_b", 0.5, rank, in)
	}
	if alpha > 0 {
		f.Alpha(module, alpha)
	}
}

// LoKr describes a LoKr module: out = a·c, in = b·d; W1 is (a, b), whole or the product
// w1_a (a, Rank1)·w1_b (Rank1, b) when Rank1 > 0; W2 is (c, d[, K, K]), whole or
// w2_a (c, Rank2)·w2_b (Rank2, d), or with K > 0 and Rank2 > 0 a Tucker product
// through t2 (Rank2, Rank2, K, K), w2_a (Rank2, c), w2_b (Rank2, d).
type LoKr struct {
	A, B, C, D   int
	Rank1, Rank2 int
	K            int
	Alpha        float64
}

// LoKr adds a LoKr module.
func (f *File) LoKr(module string, l LoKr) {
	if l.Rank1 > 0 {
		f.Random(module+".lokr_w1_a", 0.5, l.A, l.Rank1)
		f.Random(module+".lokr_w1_b", 0.5, l.Rank1, l.B)
	} else {
		f.Random(module+".lokr_w1", 0.5, l.A, l.B)
	}
	switch {
	case l.Rank2 > 0 && l.K > 0:
		f.Random(module+".lokr_t2", 0.5, l.Rank2, l.Rank2, l.K, l.K)
		f.Random(module+".lokr_w2_a", 0.5, l.Rank2, l.C)
		f.Random(module+".lokr_w2_b", 0.5, l.Rank2, l.D)
	case l.Rank2 > 0:
		f.Random(module+".lokr_w2_a", 0.5, l.C, l.Rank2)
		f.Random(module+".lokr_w2_b", 0.5, l.Rank2, l.D)
	case l.K > 0:
		f.Random(module+".lokr_w2", 0.5, l.C, l.D, l.K, l.K)
	default:
		f.Random(module+".lokr_w2", 0.5, l.C, l.D)
	}
	if l.Alpha > 0 {
		f.Alpha(module, l.Alpha)
	}
}

// Names lists the tensors added so far, sorted.
func (f *File) Names() []string {
	ns := make([]string, 0, len(f.tensors))
	for n := range f.tensors {
		ns = append(ns, n)
	}
	sort.Strings(ns)
	return ns
}

// Values returns a tensor's values and shape as written (before any rounding to the
// file's dtype).
func (f *File) Values(name string) ([]float32, []int) {
	t := f.tensors[name]
	return t.v, t.shape
}

// Write stores the tensors as a safetensors file, values rounded to the file's dtype
// (alpha scalars always F32, as kohya writes them).
func (f *File) Write(w io.Writer) error {
	var es []safetensors.Entry
	for _, name := range f.Names() {
		t := f.tensors[name]
		d := f.dtype
		if len(t.shape) == 0 {
			d = weights.F32
		}
		data, err := encode(d, t.v)
		if err != nil {
			return fmt.Errorf("loratest: %s: %w", name, err)
		}
		shape := make([]int64, len(t.shape))
		for i, s := range t.shape {
			shape[i] = int64(s)
		}
		es = append(es, safetensors.Entry{Name: name, DType: d, Shape: shape, Data: data})
	}
	return safetensors.Write(w, es, map[string]string{"forgeflow": "loratest"})
}

// Bytes is Write into memory.
func (f *File) Bytes() ([]byte, error) {
	var b bytes.Buffer
	err := f.Write(&b)
	return b.Bytes(), err
}

func encode(d weights.DType, v []float32) ([]byte, error) {
	switch d {
	case weights.F32:
		b := make([]byte, 4*len(v))
		dtype.EncodeF32(b, v)
		return b, nil
	case weights.F16:
		b := make([]byte, 2*len(v))
		dtype.EncodeF16(b, v)
		return b, nil
	case weights.BF16:
		b := make([]byte, 2*len(v))
		dtype.EncodeBF16(b, v)
		return b, nil
	}
	return nil, fmt.Errorf("dtype %s is not written", d)
}
