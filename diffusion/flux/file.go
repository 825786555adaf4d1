package flux

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights/gguf"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

// markerKey is the tensor whose name locates a Flux transformer in a file
// (comfy/model_detection.py looks for the same key).
const markerKey = "double_blocks.0.img_attn.norm.key_norm.scale"

// LoadFile loads the Flux transformer of a file: a diffusion-model safetensors file
// (bare keys, bf16/fp16/fp8 or f32), a single-file checkpoint (keys under
// "model.diffusion_model."), or a ComfyUI-GGUF file (bare keys, GGUF block types). The
// file stays memory-mapped and the weights alias it until Close.
func LoadFile(rt *gpu.Runtime, path string, opts Options) (*Model, error) {
	src, closer, err := openSource(rt, path)
	if err != nil {
		return nil, err
	}
	prefix, ok := findPrefix(src.Keys())
	if !ok {
		closer.Close()
		return nil, fmt.Errorf("flux: %s: no Flux transformer (no %s tensor)", path, markerKey)
	}
	m, err := Load(rt, src, prefix, opts)
	if err != nil {
		closer.Close()
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	m.file = closer
	return m, nil
}

// findPrefix returns the part of the marker key's name before "double_blocks.", the
// shortest one when several models share the file.
func findPrefix(keys []string) (string, bool) {
	best, found := "", false
	for _, k := range keys {
		if p, ok := strings.CutSuffix(k, markerKey); ok && (p == "" || strings.HasSuffix(p, ".")) {
			if !found || len(p) < len(best) {
				best, found = p, true
			}
		}
	}
	return best, found
}

// openSource opens a safetensors or GGUF file, told apart by the GGUF magic.
func openSource(rt *gpu.Runtime, path string) (statedict.Source, io.Closer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("flux: %w", err)
	}
	magic := make([]byte, 4)
	_, err = io.ReadFull(f, magic)
	f.Close()
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, nil, fmt.Errorf("flux: %s: %w", path, err)
	}
	if bytes.Equal(magic, []byte(gguf.Magic)) {
		g, err := gguf.Open(path)
		if err != nil {
			return nil, nil, fmt.Errorf("flux: %w", err)
		}
		return newGGUFSource(rt, g), g, nil
	}
	s, err := safetensors.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("flux: %w", err)
	}
	return statedict.NewFileSource(rt, s), s, nil
}

// ggufSource serves the tensors of a GGUF file in their stored block type, with the
// PyTorch shapes ComfyUI-GGUF gives them; they alias the file's mapping.
type ggufSource struct {
	rt   *gpu.Runtime
	file *gguf.File
	keys []string
}

func newGGUFSource(rt *gpu.Runtime, f *gguf.File) *ggufSource {
	infos := f.Tensors()
	keys := make([]string, len(infos))
	for i, in := range infos {
		keys[i] = in.Name
	}
	return &ggufSource{rt: rt, file: f, keys: keys}
}

// Keys implements statedict.Source.
func (s *ggufSource) Keys() []string { return s.keys }

// Tensor implements statedict.Source.
func (s *ggufSource) Tensor(key string) (*gpu.Tensor, error) {
	t, err := s.file.Tensor(key)
	if err != nil {
		return nil, err
	}
	name := string(t.Type.DType())
	d, ok := gpuDType(name)
	if !ok {
		return nil, fmt.Errorf("%s: tensor %q: GGUF type %s is not supported by the matrix kernels", s.file.Name(), key, name)
	}
	ts := s.file.TorchShape(t.TensorInfo)
	shape := make([]int, len(ts))
	for i, v := range ts {
		shape[i] = int(v)
	}
	return s.rt.FromBytes(d, t.Data, shape...)
}

// gpuDType maps a stored dtype name (safetensors or GGUF spelling) to the runtime's.
func gpuDType(name string) (gpu.DType, bool) {
	for d := gpu.F32; d.Valid(); d++ {
		if d.String() == name {
			return d, true
		}
	}
	return 0, false
}

// castSource wraps src so that every float tensor is stored as UNETLoader's
// weight_dtype asks; "" and "default" return src unchanged.
func castSource(rt *gpu.Runtime, src statedict.Source, weightDType string) (statedict.Source, error) {
	var d gpu.DType
	switch weightDType {
	case "", "default":
		return src, nil
	case "fp8_e4m3fn", "fp8_e4m3fn_fast":
		d = gpu.F8E4M3FN
	case "fp8_e5m2":
		d = gpu.F8E5M2
	default:
		return nil, fmt.Errorf("flux: weight dtype %q is not one of default, fp8_e4m3fn, fp8_e4m3fn_fast, fp8_e5m2", weightDType)
	}
	return &castingSource{Source: src, rt: rt, dtype: d}, nil
}

// castingSource converts float tensors to one dtype as they are bound.
type castingSource struct {
	statedict.Source
	rt    *gpu.Runtime
	dtype gpu.DType
}

func (s *castingSource) Tensor(key string) (*gpu.Tensor, error) {
	t, err := s.Source.Tensor(key)
	if err != nil || !t.DType().IsFloat() || t.DType() == s.dtype {
		return t, err
	}
	c, err := gpu.Cast(s.rt, t, s.dtype)
	t.Release()
	return c, err
}
