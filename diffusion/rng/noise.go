package rng

import (
	"errors"
	"fmt"
	"slices"
)

// PrepareNoise returns the initial latent noise ComfyUI's KSampler uses for a latent of
// the given shape (comfy/sample.py prepare_noise): one torch.randn over the whole shape
// after torch.manual_seed(seed). When batchIndex is non-empty (a latent that carries
// batch_index), one sample of shape [1, shape[1:]...] is drawn per index from 0 to the
// largest index, in order from the same generator, and the listed ones are returned in
// the listed order; the result's batch size is then len(batchIndex).
func PrepareNoise(seed uint64, shape []int, batchIndex []int) ([]float32, error) {
	if len(shape) == 0 {
		return nil, errors.New("rng: prepare noise: empty shape")
	}
	per := 1
	for i, d := range shape {
		if d < 0 {
			return nil, fmt.Errorf("rng: prepare noise: negative dimension %d at %d", d, i)
		}
		if i > 0 {
			per *= d
		}
	}
	g := New(seed)
	if len(batchIndex) == 0 {
		out := make([]float32, per*shape[0])
		g.Randn(out)
		return out, nil
	}
	if slices.Min(batchIndex) < 0 {
		return nil, fmt.Errorf("rng: prepare noise: negative batch index %d", slices.Min(batchIndex))
	}
	top := slices.Max(batchIndex)
	want := map[int][]float32{}
	for _, i := range batchIndex {
		want[i] = nil
	}
	sample := make([]float32, per)
	for i := 0; i <= top; i++ {
		g.Randn(sample)
		if _, ok := want[i]; ok {
			want[i] = slices.Clone(sample)
		}
	}
	out := make([]float32, 0, per*len(batchIndex))
	for _, i := range batchIndex {
		out = append(out, want[i]...)
	}
	return out, nil
}
