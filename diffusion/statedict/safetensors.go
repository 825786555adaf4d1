package statedict

import (
	"fmt"

	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

// FileSource serves the tensors of an open safetensors file, memory-mapped: the tensors
// alias the file's mapping and stay valid while the file is open.
type FileSource struct {
	rt   *gpu.Runtime
	file *safetensors.File
	keys []string
}

// NewFileSource wraps an open safetensors file.
func NewFileSource(rt *gpu.Runtime, f *safetensors.File) *FileSource {
	infos := f.Tensors()
	keys := make([]string, len(infos))
	for i, in := range infos {
		keys[i] = in.Name
	}
	return &FileSource{rt: rt, file: f, keys: keys}
}

// Keys implements Source.
func (s *FileSource) Keys() []string { return s.keys }

// Tensor implements Source.
func (s *FileSource) Tensor(key string) (*gpu.Tensor, error) {
	t, err := s.file.Tensor(key)
	if err != nil {
		return nil, err
	}
	d, err := gpuDType(string(t.DType))
	if err != nil {
		return nil, fmt.Errorf("%s: tensor %q: %w", s.file.Name(), key, err)
	}
	shape := make([]int, len(t.Shape))
	for i, v := range t.Shape {
		shape[i] = int(v)
	}
	return s.rt.FromBytes(d, t.Data, shape...)
}

// gpuDType maps a file dtype name to the runtime's; integer tensors are not weights.
func gpuDType(name string) (gpu.DType, error) {
	for d := gpu.F32; d <= gpu.Q6_K; d++ {
		if d.String() == name {
			return d, nil
		}
	}
	return 0, fmt.Errorf("dtype %s is not a weight dtype", name)
}
