package lora

import (
	"fmt"
	"runtime"
	"sort"
	"sync"

	"github.com/forgeflow/forgeflow/diffusion/nn"
	"github.com/forgeflow/forgeflow/gpu"
)

// Effective returns a network whose Net holds every patch of n's stack merged into its
// weights: n itself when no layer of n.Net takes run-time patches, else the stack
// applied again from Base in Merge mode. Its weights are what ComfyUI's
// get_key_patches hands a merge node and what CheckpointSave writes.
func (n *Network[T]) Effective(rt *gpu.Runtime) (*Network[T], error) {
	runtimePatched := false
	err := nn.Layers(n.Net, func(l nn.Layer) error {
		switch l := l.(type) {
		case *nn.Linear:
			runtimePatched = runtimePatched || len(l.Patches) > 0
		case *nn.Conv:
			runtimePatched = runtimePatched || len(l.Patches) > 0
		}
		return nil
	})
	if err != nil || !runtimePatched {
		return n, err
	}
	m := &Network[T]{Base: n.Base, Net: n.Base, Origin: n.Origin, Prefix: n.Prefix, Mode: Merge}
	for _, e := range n.Stack {
		if m, _, err = m.With(rt, e); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Reader returns a function giving the parameter key of n.Net as float32 values (a
// scaled-fp8 weight times its scale, a quantized matrix dequantized) and its shape; ok
// is false when n has no such parameter. Run-time patches are not in it (see Effective).
func (n *Network[T]) Reader(rt *gpu.Runtime) (func(key string) (v []float32, shape []int, ok bool, err error), error) {
	idx, err := index(n.Net, n.Prefix)
	if err != nil {
		return nil, err
	}
	return func(key string) ([]float32, []int, bool, error) {
		s, ok := idx[key]
		if !ok {
			return nil, nil, false, nil
		}
		t := s.tensor()
		v, err := weightValues(rt, t, s.scale())
		if err != nil {
			return nil, nil, false, fmt.Errorf("lora: %s: %w", key, err)
		}
		return v, t.Shape(), true, nil
	}, nil
}

// scale is the scaled-fp8 scale of a Linear's weight, nil for any other slot.
func (s slot) scale() *gpu.Tensor {
	if l, ok := s.layer.(*nn.Linear); ok && !s.bias && s.field == nil {
		return l.ScaleWeight
	}
	return nil
}

// set gives the slot another tensor (a Linear weight loses its scale: t holds the
// scaled values).
func (s slot) set(t *gpu.Tensor) {
	if s.field != nil {
		*s.field = t
		return
	}
	switch l := s.layer.(type) {
	case *nn.Linear:
		if s.bias {
			l.Bias = t
		} else {
			l.Weight, l.ScaleWeight = t, nil
		}
	case *nn.Conv:
		if s.bias {
			l.Bias = t
		} else {
			l.Weight = t
		}
	case *nn.Norm:
		if s.bias {
			l.Bias = t
		} else {
			l.Weight = t
		}
	case *nn.RMSNorm:
		l.Weight = t
	}
}

// Combine returns a network whose parameters are n's effective ones (Effective) as
// update leaves them: update gets each parameter's key, its float32 values and shape
// (in key order, several parameters at a time), may change the values in place and
// reports whether it did; a changed parameter is rounded once to its dtype (F16 for F8
// and quantized weights, as a merged LoRA is). The result has no stack: its Base is the
// combined tree, on which later LoRAs apply, as ComfyUI applies them after a merge's
// patches. Unchanged parameters share n's tensors; n is not changed.
func (n *Network[T]) Combine(rt *gpu.Runtime, update func(key string, v []float32, shape []int) (bool, error)) (*Network[T], error) {
	eff, err := n.Effective(rt)
	if err != nil {
		return nil, err
	}
	clone, err := nn.Clone(eff.Net)
	if err != nil {
		return nil, err
	}
	idx, err := index(clone, n.Prefix)
	if err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(idx))
	for k := range idx {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]*gpu.Tensor, len(keys))
	errs := make([]error, len(keys))
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		next int
	)
	for w := 0; w < min(runtime.GOMAXPROCS(0), len(keys)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= len(keys) {
					return
				}
				out[i], errs[i] = combineOne(rt, keys[i], idx[keys[i]], update)
			}
		}()
	}
	wg.Wait()
	for i, k := range keys {
		if errs[i] != nil {
			return nil, errs[i]
		}
		if out[i] != nil {
			idx[k].set(out[i])
		}
	}
	return &Network[T]{Base: clone, Net: clone, Origin: n.Origin, Prefix: n.Prefix, Mode: n.Mode}, nil
}

// combineOne runs update on one parameter; nil when it left the values alone.
func combineOne(rt *gpu.Runtime, key string, s slot, update func(string, []float32, []int) (bool, error)) (*gpu.Tensor, error) {
	t := s.tensor()
	v, err := weightValues(rt, t, s.scale())
	if err != nil {
		return nil, fmt.Errorf("lora: %s: %w", key, err)
	}
	shape := t.Shape()
	changed, err := update(key, v, shape)
	if err != nil || !changed {
		return nil, err
	}
	d := mergedDType(t.DType())
	size, err := d.StorageBytes(len(v))
	if err != nil {
		return nil, err
	}
	buf := make([]byte, size)
	if err := gpu.EncodeFloat32(d, buf, v); err != nil {
		return nil, fmt.Errorf("lora: %s: %w", key, err)
	}
	return rt.FromBytes(d, buf, shape...)
}

// Changed returns the parameters of n's effective network (Effective) whose tensor is
// not the one Origin holds under the same key: what differs from the tree as loaded.
func (n *Network[T]) Changed(rt *gpu.Runtime) (map[string]*gpu.Tensor, error) {
	eff, err := n.Effective(rt)
	if err != nil {
		return nil, err
	}
	now, err := index(eff.Net, n.Prefix)
	if err != nil {
		return nil, err
	}
	origin := n.Origin
	if origin == nil {
		origin = n.Base
	}
	was, err := index(origin, n.Prefix)
	if err != nil {
		return nil, err
	}
	out := map[string]*gpu.Tensor{}
	for k, s := range now {
		t := s.tensor()
		if o, ok := was[k]; !ok || o.tensor() != t || (s.scale() == nil) != (o.scale() == nil) {
			out[k] = t
		}
	}
	return out, nil
}
