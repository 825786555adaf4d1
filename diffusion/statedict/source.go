package statedict

import (
	"fmt"
	"sort"

	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// FileSource serves the tensors of an open tensor file (safetensors, GGUF or torch, as
// weights/tensorfile opens them) in their stored dtype: on the cpu backend a tensor
// aliases the file's mapping and stays valid while the file is open. It is the one
// Source of checkpoint loading; tests load through it too.
//
// Alias adds keys the model code asks for that the file stores under another name or
// computes from a stored tensor: a row range of a fused projection, a transpose, or the
// same elements in another shape.
type FileSource struct {
	rt    *gpu.Runtime
	file  *tensorfile.File
	keys  []string           // the stored keys sorted, then aliases in the order added
	alias map[string]Derived // model key → how to make it
}

// Derived says how a key is made from the file: the stored tensor, optionally rows
// [From, From+N) of it (N > 0), its transpose (a matrix), or its elements viewed in
// Shape.
type Derived struct {
	Stored    string
	From, N   int
	Transpose bool
	Shape     []int
}

// NewFileSource serves f's tensors through rt.
func NewFileSource(rt *gpu.Runtime, f *tensorfile.File) *FileSource {
	infos := f.Tensors()
	keys := make([]string, len(infos))
	for i, in := range infos {
		keys[i] = in.Name
	}
	sort.Strings(keys)
	return &FileSource{rt: rt, file: f, keys: keys, alias: map[string]Derived{}}
}

// File returns the file the source reads.
func (s *FileSource) File() *tensorfile.File { return s.file }

// Keys implements Source: the stored keys and every alias.
func (s *FileSource) Keys() []string { return s.keys }

// Has reports whether the file stores key (aliases aside).
func (s *FileSource) Has(key string) bool {
	_, ok := s.file.Info(key)
	return ok
}

// Alias serves key as d describes; a later Alias of the same key replaces it.
func (s *FileSource) Alias(key string, d Derived) {
	if _, ok := s.alias[key]; !ok {
		s.keys = append(s.keys, key)
	}
	s.alias[key] = d
}

// Derivation reports how key is served: its alias, or the stored tensor of that name.
// It reports false for a key the source does not serve.
func (s *FileSource) Derivation(key string) (Derived, bool) {
	if d, ok := s.alias[key]; ok {
		return d, true
	}
	return Derived{Stored: key}, s.Has(key)
}

// Tensor implements Source.
func (s *FileSource) Tensor(key string) (*gpu.Tensor, error) {
	d, ok := s.alias[key]
	if !ok {
		d = Derived{Stored: key}
	}
	stored, err := s.file.Tensor(d.Stored)
	if err != nil {
		return nil, err
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("statedict: %s: tensor %q: %s", s.file.Name(), d.Stored, fmt.Sprintf(format, args...))
	}
	dt, err := gpuDType(stored.DType)
	if err != nil {
		return nil, fail("%v", err)
	}
	shape := make([]int, len(stored.Shape))
	for i, v := range stored.Shape {
		shape[i] = int(v)
	}
	if d.Shape != nil {
		shape = d.Shape
	}
	t, err := s.rt.FromBytes(dt, stored.Data, shape...)
	if err != nil {
		return nil, fail("%v", err)
	}
	if d.N > 0 {
		if len(shape) == 0 || d.From+d.N > shape[0] {
			t.Release()
			return nil, fail("%v has no rows %d…%d", shape, d.From, d.From+d.N)
		}
		v, err := gpu.Narrow(t, 0, d.From, d.N)
		t.Release()
		if err != nil {
			return nil, err
		}
		t = v
	}
	if d.Transpose {
		if len(shape) != 2 {
			t.Release()
			return nil, fail("%v is not a matrix", shape)
		}
		v, err := gpu.Transpose(t, 0, 1)
		t.Release()
		if err != nil {
			return nil, err
		}
		t = v
	}
	if !t.IsContiguous() {
		c, err := gpu.Contiguous(s.rt, t)
		t.Release()
		if err != nil {
			return nil, fmt.Errorf("statedict: %s: %w", key, err)
		}
		t = c
	}
	return t, nil
}

// gpuDType maps a file dtype to the runtime's (both spell it as the files do); integer
// tensors are not weights.
func gpuDType(d weights.DType) (gpu.DType, error) {
	for g := gpu.F32; g.Valid(); g++ {
		if g.String() == string(d) {
			return g, nil
		}
	}
	return 0, fmt.Errorf("dtype %s is not a weight dtype", d)
}
