package flux

import (
	"bytes"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"

	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/gguf"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

// Random-weight Flux transformers with the real key names and layout of a Flux
// diffusion-model file, at any size: full-size ones (flux1-dev, flux1-schnell) to
// measure speed without downloading a model, tiny ones for tests. Values are drawn per
// tensor name and row chunk from the seed, so a file's values depend only on the spec,
// whatever the dtype: the GGUF file of a spec holds the quantized values of its
// safetensors file.

// RandomSpec sizes a random Flux transformer.
type RandomSpec struct {
	Hidden, Heads      int // hidden size and head count
	Depth, DepthSingle int // double- and single-stream blocks
	MLPHidden          int // MLP width (4·Hidden in the released models)
	Channels           int // latent channels out (16)
	InChannels         int // latent channels in: Channels, or more for Flux Fill's concat
	Context, Vec       int // T5 and pooled CLIP widths
	Guidance           bool
	QKVBias            bool
	// Prefix is put before every key: "" for a diffusion-model file,
	// "model.diffusion_model." for a single-file checkpoint.
	Prefix string
	Seed   uint64
}

// DevRandomSpec is flux1-dev's architecture.
func DevRandomSpec() RandomSpec {
	return RandomSpec{Hidden: 3072, Heads: 24, Depth: 19, DepthSingle: 38, MLPHidden: 4 * 3072, Channels: 16, InChannels: 16,
		Context: 4096, Vec: 768, Guidance: true, QKVBias: true}
}

// SchnellRandomSpec is flux1-schnell's architecture (no guidance embedding).
func SchnellRandomSpec() RandomSpec {
	s := DevRandomSpec()
	s.Guidance = false
	return s
}

// TinyRandomSpec is a Flux with two 128-wide heads (so ComfyUI's rope axes apply), one
// block of each kind and narrow text inputs, for tests.
func TinyRandomSpec(guidance bool) RandomSpec {
	return RandomSpec{Hidden: 256, Heads: 2, Depth: 1, DepthSingle: 1, MLPHidden: 4 * 256, Channels: 16, InChannels: 16,
		Context: 64, Vec: 32, Guidance: guidance, QKVBias: true}
}

// RandomTensor is one tensor of a random model: Offset + Scale·N(0, 1) per value.
type RandomTensor struct {
	Name          string
	Shape         []int
	Scale, Offset float64
	key           string // Name without the spec's prefix: what seeds the values
}

// rows and cols view the tensor as a matrix of its last dim (a vector is one row).
func (t RandomTensor) rows() int {
	n := 1
	for _, d := range t.Shape[:len(t.Shape)-1] {
		n *= d
	}
	return n
}
func (t RandomTensor) cols() int { return t.Shape[len(t.Shape)-1] }

// randomChunkRows is how many rows share one generator stream.
const randomChunkRows = 64

// chunk draws rows [r0, r0+n) (n ≤ randomChunkRows, r0 a multiple of it).
func (t RandomTensor) chunk(seed uint64, r0, n int) []float32 {
	h := fnv.New64a()
	h.Write([]byte(t.key))
	r := rand.New(rand.NewPCG(seed^uint64(r0/randomChunkRows)*0x9e3779b97f4a7c15, h.Sum64()))
	v := make([]float32, n*t.cols())
	for i := range v {
		v[i] = float32(t.Offset + t.Scale*r.NormFloat64())
	}
	return v
}

// Tensors lists the model's tensors under s.Prefix.
func (s RandomSpec) Tensors() ([]RandomTensor, error) {
	if s.Hidden <= 0 || s.Heads <= 0 || s.Hidden%s.Heads != 0 || s.Depth < 1 || s.DepthSingle < 0 || s.MLPHidden <= 0 ||
		s.Channels <= 0 || s.InChannels < s.Channels || s.Context <= 0 || s.Vec <= 0 {
		return nil, fmt.Errorf("flux: random spec %+v: sizes must be positive, with heads dividing the hidden size and at least one double block", s)
	}
	var ts []RandomTensor
	add := func(name string, scale, offset float64, shape ...int) {
		ts = append(ts, RandomTensor{Name: s.Prefix + name, Shape: shape, Scale: scale, Offset: offset, key: name})
	}
	lin := func(name string, out, in int, bias bool, gain float64) {
		add(name+".weight", gain/math.Sqrt(float64(in)), 0, out, in)
		if bias {
			add(name+".bias", 0.05, 0, out)
		}
	}
	h, d := s.Hidden, s.Hidden/s.Heads
	norm := func(p string) {
		add(p+".query_norm.scale", 0.1, 1, d)
		add(p+".key_norm.scale", 0.1, 1, d)
	}
	// Modulation weights are kept small so that random gates do not blow the
	// activations up over many blocks.
	const modGain = 0.2
	lin("img_in", h, 4*s.InChannels, true, 1)
	lin("time_in.in_layer", h, timeEmbedDim, true, 1)
	lin("time_in.out_layer", h, h, true, 1)
	lin("vector_in.in_layer", h, s.Vec, true, 1)
	lin("vector_in.out_layer", h, h, true, 1)
	if s.Guidance {
		lin("guidance_in.in_layer", h, timeEmbedDim, true, 1)
		lin("guidance_in.out_layer", h, h, true, 1)
	}
	lin("txt_in", h, s.Context, true, 1)
	for i := 0; i < s.Depth; i++ {
		for _, st := range []string{"img", "txt"} {
			p := fmt.Sprintf("double_blocks.%d.%s_", i, st)
			lin(p+"mod.lin", 6*h, h, true, modGain)
			lin(p+"attn.qkv", 3*h, h, s.QKVBias, 1)
			norm(p + "attn.norm")
			lin(p+"attn.proj", h, h, true, 1)
			lin(p+"mlp.0", s.MLPHidden, h, true, 1)
			lin(p+"mlp.2", h, s.MLPHidden, true, 1)
		}
	}
	for i := 0; i < s.DepthSingle; i++ {
		p := fmt.Sprintf("single_blocks.%d.", i)
		lin(p+"linear1", 3*h+s.MLPHidden, h, true, 1)
		lin(p+"linear2", h, h+s.MLPHidden, true, 1)
		norm(p + "norm")
		lin(p+"modulation.lin", 3*h, h, true, modGain)
	}
	lin("final_layer.adaLN_modulation.1", 2*h, h, true, modGain)
	lin("final_layer.linear", 4*s.Channels, h, true, 1)
	return ts, nil
}

// WriteRandomSafetensors writes the spec's model as safetensors in dtype (F32, F16,
// BF16, F8_E4M3 or F8_E5M2), generating each tensor while it is written.
func WriteRandomSafetensors(w io.Writer, s RandomSpec, dtype gpu.DType) error {
	if !dtype.IsFloat() {
		return fmt.Errorf("flux: random safetensors dtype %s is not a plain float type", dtype)
	}
	ts, err := s.Tensors()
	if err != nil {
		return err
	}
	return writeSafetensors(w, ts, s.Seed, dtype)
}

// writeSafetensors writes the listed random tensors.
func writeSafetensors(w io.Writer, ts []RandomTensor, seed uint64, dtype gpu.DType) error {
	es := make([]safetensors.Entry, len(ts))
	for i, t := range ts {
		shape := make([]int64, len(t.Shape))
		for j, d := range t.Shape {
			shape[j] = int64(d)
		}
		es[i] = safetensors.Entry{Name: t.Name, DType: weights.DType(dtype.String()), Shape: shape, WriteData: func(w io.Writer) error {
			return writeChunks(w, t, seed, func(v []float32) ([]byte, error) {
				n, err := dtype.StorageBytes(len(v))
				if err != nil {
					return nil, err
				}
				b := make([]byte, n)
				return b, gpu.EncodeFloat32(dtype, b, v)
			})
		}}
	}
	safetensors.SortEntries(es)
	return safetensors.Write(w, es, map[string]string{"forgeflow": "random weights"})
}

// WriteRandomGGUF writes the spec's model laid out as ComfyUI-GGUF's Flux files are:
// matrices in qtype, except the small input and output layers kept in BF16, and
// vectors in F32 (storedType).
func WriteRandomGGUF(w io.Writer, s RandomSpec, qtype gguf.Type) error {
	if !qtype.CanQuantize() {
		return fmt.Errorf("flux: cannot write GGUF type %s", qtype)
	}
	ts, err := s.Tensors()
	if err != nil {
		return err
	}
	wts := make([]gguf.WriteTensor, len(ts))
	for i, t := range ts {
		typ := s.storedType(t, qtype)
		dims := make([]uint64, len(t.Shape))
		for j, d := range t.Shape {
			dims[len(dims)-1-j] = uint64(d)
		}
		wts[i] = gguf.WriteTensor{Name: t.Name, Type: typ, Dims: dims, WriteData: func(w io.Writer) error {
			return writeChunks(w, t, s.Seed, quantizer(typ))
		}}
	}
	return gguf.Write(w, []gguf.KV{
		{Key: "general.architecture", Type: gguf.TypeString, Value: "flux"},
		{Key: "general.description", Type: gguf.TypeString, Value: "forgeflow random weights"},
	}, wts)
}

// storedType is the GGUF type a tensor gets in a file of qtype: ComfyUI-GGUF's Flux
// files keep vectors in F32 and the small input and output layers in BF16.
func (s RandomSpec) storedType(t RandomTensor, qtype gguf.Type) gguf.Type {
	switch {
	case len(t.Shape) == 1:
		return gguf.TypeF32
	case keptBF16(t.Name, s.Prefix) || t.cols()%qtype.BlockSize() != 0:
		if qtype == gguf.TypeF32 || qtype == gguf.TypeF16 {
			return qtype
		}
		return gguf.TypeBF16
	}
	return qtype
}

// quantizer encodes float32 values as typ.
func quantizer(typ gguf.Type) func([]float32) ([]byte, error) {
	return func(v []float32) ([]byte, error) {
		n, err := typ.RowSize(int64(len(v)))
		if err != nil {
			return nil, err
		}
		b := make([]byte, n)
		return b, gguf.Quantize(b, typ, v)
	}
}

// keptBF16 tells the layers ComfyUI-GGUF's Flux files keep unquantized.
func keptBF16(name, prefix string) bool {
	for _, p := range []string{"img_in.", "txt_in.", "time_in.", "vector_in.", "guidance_in.", "final_layer."} {
		if len(name) >= len(prefix)+len(p) && name[len(prefix):len(prefix)+len(p)] == p {
			return true
		}
	}
	return false
}

// writeChunks generates t in row chunks on all cores, encodes each and writes them in
// order.
func writeChunks(w io.Writer, t RandomTensor, seed uint64, encode func([]float32) ([]byte, error)) error {
	rows := t.rows()
	workers := runtime.GOMAXPROCS(0)
	for r0 := 0; r0 < rows; r0 += workers * randomChunkRows {
		n := min(workers, (rows-r0+randomChunkRows-1)/randomChunkRows)
		bufs := make([][]byte, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for k := 0; k < n; k++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c0 := r0 + k*randomChunkRows
				bufs[k], errs[k] = encode(t.chunk(seed, c0, min(randomChunkRows, rows-c0)))
			}()
		}
		wg.Wait()
		for k := 0; k < n; k++ {
			if errs[k] != nil {
				return fmt.Errorf("flux: %s: %w", t.Name, errs[k])
			}
			if _, err := w.Write(bufs[k]); err != nil {
				return err
			}
		}
	}
	return nil
}

// RandomSource is a statedict.Source that makes a random model's tensors in memory as
// they are asked for, stored as WriteRandomGGUF would store them for qtype (F32, F16,
// BF16 or a block type): the weights of benchmarks that need no file.
type RandomSource struct {
	rt      *gpu.Runtime
	spec    RandomSpec
	qtype   gguf.Type
	tensors map[string]RandomTensor
	keys    []string
}

// NewRandomSource returns the source of s's tensors.
func NewRandomSource(rt *gpu.Runtime, s RandomSpec, qtype gguf.Type) (*RandomSource, error) {
	if !qtype.CanQuantize() {
		return nil, fmt.Errorf("flux: cannot make tensors of type %s", qtype)
	}
	ts, err := s.Tensors()
	if err != nil {
		return nil, err
	}
	src := &RandomSource{rt: rt, spec: s, qtype: qtype, tensors: map[string]RandomTensor{}}
	for _, t := range ts {
		src.tensors[t.Name] = t
		src.keys = append(src.keys, t.Name)
	}
	return src, nil
}

// Keys implements statedict.Source.
func (r *RandomSource) Keys() []string { return r.keys }

// Tensor implements statedict.Source.
func (r *RandomSource) Tensor(key string) (*gpu.Tensor, error) {
	t, ok := r.tensors[key]
	if !ok {
		return nil, fmt.Errorf("flux: random model has no tensor %q", key)
	}
	typ := r.spec.storedType(t, r.qtype)
	d, ok := gpuDType(typ.String())
	if !ok {
		return nil, fmt.Errorf("flux: %s: type %s has no runtime dtype", key, typ)
	}
	var buf bytes.Buffer
	if err := writeChunks(&buf, t, r.spec.Seed, quantizer(typ)); err != nil {
		return nil, err
	}
	return r.rt.FromBytes(d, buf.Bytes(), t.Shape...)
}
