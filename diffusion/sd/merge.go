package sd

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/forgeflow/forgeflow/diffusion/clip"
	"github.com/forgeflow/forgeflow/diffusion/lora"
	"github.com/forgeflow/forgeflow/diffusion/t5"
	"github.com/forgeflow/forgeflow/gpu"
)

// MergeFunc says how a merge combines one parameter (a ComfyUI state-dict key,
// "diffusion_model.…" or "clip_l.transformer.…"): W·self + W₂·other, ComfyUI's
// strength_model and strength_patch of add_patches; ok false leaves the parameter alone.
type MergeFunc func(key string) (self, other float64, ok bool)

// mergeNets combines a's effective parameters with b's by f, in float32, as
// calculate_weight applies a "diff" patch: W·self (skipped when self is 1), then
// + other·W₂ (skipped when other is 0). Parameters b lacks are left alone, and so are
// those whose shape differs (their keys are appended to skipped: ComfyUI warns and
// leaves them too).
func mergeNets[T any](ctx context.Context, rt *gpu.Runtime, a, b *lora.Network[T], f MergeFunc, skipped *[]string) (*lora.Network[T], error) {
	eb, err := b.Effective(rt)
	if err != nil {
		return nil, err
	}
	read, err := eb.Reader(rt)
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex
	return a.Combine(rt, func(key string, v []float32, shape []int) (bool, error) {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		self, other, ok := f(key)
		if !ok || (self == 1 && other == 0) {
			return false, nil
		}
		w2, s2, ok, err := read(key)
		if err != nil || !ok {
			return false, err
		}
		if !slices.Equal(shape, s2) {
			mu.Lock()
			*skipped = append(*skipped, fmt.Sprintf("%s: %v against %v", key, shape, s2))
			mu.Unlock()
			return false, nil
		}
		s, o := float32(self), float32(other)
		for i := range v {
			x := v[i]
			if self != 1 {
				x *= s
			}
			if other != 0 {
				x += o * w2[i]
			}
			v[i] = x
		}
		return true, nil
	})
}

// MergeModels is the ModelMerge nodes' merge: a copy of m1 whose network parameters are
// combined with m2's by f (m2's LoRAs included, as get_key_patches hands them over).
// Both must run the same kind of network (an SD UNet or Flux); SD3's MMDiT is not on
// diffusion/nn yet and is refused with an UnsupportedError. skipped lists the
// parameters left alone because their shapes differ; a cancelled ctx stops the merge
// between parameters. m1 and m2 are not changed; the
// result's LoRAs (if any come later) apply on top of the merged weights.
func MergeModels(ctx context.Context, m1, m2 *Model, f MergeFunc) (out *Model, skipped []string, err error) {
	if m1 == nil || m2 == nil {
		return nil, nil, fmt.Errorf("sd: merge: a model is missing")
	}
	if a := m1.fluxNet(lora.Auto); a != nil {
		b := m2.fluxNet(lora.Auto)
		if b == nil {
			return nil, nil, fmt.Errorf("sd: merge: %s is a Flux model and %s is not", m1.Name, m2.Name)
		}
		n, err := mergeNets(ctx, m1.Runtime, a, b, f, &skipped)
		if err != nil {
			return nil, nil, fmt.Errorf("sd: merge %s with %s: %w", m1.Name, m2.Name, err)
		}
		c := *m1
		c.Net, c.fluxLoras = FluxNetwork{n.Net}, n
		return &c, skipped, nil
	}
	a, err := m1.loraNet(lora.Auto)
	if err != nil {
		return nil, nil, err
	}
	if m2.UNet == nil {
		return nil, nil, fmt.Errorf("sd: merge: %s has an SD UNet and %s does not", m1.Name, m2.Name)
	}
	b, err := m2.loraNet(lora.Auto)
	if err != nil {
		return nil, nil, err
	}
	n, err := mergeNets(ctx, m1.Runtime, a, b, f, &skipped)
	if err != nil {
		return nil, nil, fmt.Errorf("sd: merge %s with %s: %w", m1.Name, m2.Name, err)
	}
	c := *m1
	c.UNet, c.loras = n.Net, n
	return &c, skipped, nil
}

// MergeCLIPs is the CLIPMerge nodes' merge: a copy of c1 whose text encoders (their
// text projections included) are combined with c2's of the same name ("l", "g", "h";
// T5 with T5) by f. Encoders c2 lacks are left alone.
func MergeCLIPs(ctx context.Context, c1, c2 *CLIP, f MergeFunc) (out *CLIP, skipped []string, err error) {
	if c1 == nil || c2 == nil {
		return nil, nil, fmt.Errorf("sd: merge: a CLIP is missing")
	}
	cp := *c1
	cp.Encoders = slices.Clone(c1.Encoders)
	for i, te := range c1.Encoders {
		var other *TextEncoder
		for _, o := range c2.Encoders {
			if o.Name == te.Name {
				other = o
			}
		}
		if other == nil {
			continue
		}
		n, err := mergeNets[clip.TextModel](ctx, c1.Runtime, te.loraNet(lora.Auto), other.loraNet(lora.Auto), f, &skipped)
		if err != nil {
			return nil, nil, fmt.Errorf("sd: merge text encoder %s: %w", te.Name, err)
		}
		enc := *te.Encoder
		enc.Model = n.Net
		if enc.Projection != nil && other.Encoder.Projection != nil {
			key := "clip_" + te.Name + ".transformer.text_projection.weight"
			if enc.Projection, err = mergeTensor(c1.Runtime, key, enc.Projection, other.Encoder.Projection, f, &skipped); err != nil {
				return nil, nil, fmt.Errorf("sd: merge text encoder %s: %w", te.Name, err)
			}
		}
		t := *te
		t.Encoder, t.loras = &enc, n
		cp.Encoders[i] = &t
	}
	if c1.T5 != nil && c2.T5 != nil {
		n, err := mergeNets[t5.Model](ctx, c1.Runtime, c1.T5.loraNet(lora.Auto), c2.T5.loraNet(lora.Auto), f, &skipped)
		if err != nil {
			return nil, nil, fmt.Errorf("sd: merge T5 text encoder: %w", err)
		}
		enc := *c1.T5.Encoder
		enc.Model = n.Net
		t := *c1.T5
		t.Encoder, t.loras = &enc, n
		cp.T5 = &t
	}
	return &cp, skipped, nil
}

// mergeTensor combines one tensor outside the networks (a text projection) as
// mergeNets does a parameter; a is returned when f leaves it alone or the shapes differ.
func mergeTensor(rt *gpu.Runtime, key string, a, b *gpu.Tensor, f MergeFunc, skipped *[]string) (*gpu.Tensor, error) {
	self, other, ok := f(key)
	if !ok || (self == 1 && other == 0) {
		return a, nil
	}
	if !slices.Equal(a.Shape(), b.Shape()) {
		*skipped = append(*skipped, fmt.Sprintf("%s: %v against %v", key, a.Shape(), b.Shape()))
		return a, nil
	}
	v, err := a.Float32()
	if err != nil {
		return nil, err
	}
	w2, err := b.Float32()
	if err != nil {
		return nil, err
	}
	s, o := float32(self), float32(other)
	for i := range v {
		if self != 1 {
			v[i] *= s
		}
		if other != 0 {
			v[i] += o * w2[i]
		}
	}
	d := a.DType()
	if d != gpu.F32 && d != gpu.F16 && d != gpu.BF16 {
		d = gpu.F16
	}
	size, err := d.StorageBytes(len(v))
	if err != nil {
		return nil, err
	}
	buf := make([]byte, size)
	if err := gpu.EncodeFloat32(d, buf, v); err != nil {
		return nil, err
	}
	return rt.FromBytes(d, buf, a.Shape()...)
}
