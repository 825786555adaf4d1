package lora

import (
	"errors"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"sync"

	"github.com/forgeflow/forgeflow/diffusion/nn"
	"github.com/forgeflow/forgeflow/gpu"
)

// Mode chooses how a network's patched weights are computed.
type Mode uint8

const (
	// Auto merges float weights (F32, F16, BF16) and patches float8 and quantized (GGUF)
	// weights at run time, so that they are never dequantized as a whole.
	Auto Mode = iota
	// Merge gives every patched weight a merged copy (float8 and quantized ones in F16):
	// sampling runs at the plain model's speed.
	Merge
	// Runtime adds LoRA updates beside each layer's product (y = x·Wᵀ + (x·Downᵀ)·Upᵀ)
	// and copies no weight; updates without a low-rank form (LoHa, LoKr, full diffs,
	// DoRA) are merged.
	Runtime
)

func (m Mode) String() string {
	switch m {
	case Auto:
		return "auto"
	case Merge:
		return "merge"
	case Runtime:
		return "runtime"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// ParseMode reads "auto", "merge" or "runtime" ("" is auto).
func ParseMode(s string) (Mode, error) {
	switch s {
	case "", "auto":
		return Auto, nil
	case "merge":
		return Merge, nil
	case "runtime":
		return Runtime, nil
	}
	return 0, fmt.Errorf("lora: unknown apply mode %q (auto, merge or runtime)", s)
}

// Entry is one LoRA of a stack: its resolved patches and strength.
type Entry struct {
	Set      *Set
	Strength float64
}

// Network is a model tree (a pointer to a struct built from diffusion/nn layers, bound
// from a file by statedict.Bind) with a stack of LoRAs applied. Base is the tree as
// loaded and is never changed; Net is what to run: Base itself until a LoRA is applied,
// then a clone (nn.Clone) whose patched layers hold merged copies or run-time patches
// and whose other layers share Base's tensors. Dropping the LoRAs is using Base again.
//
// A Network's Sets read their File again whenever a later LoRA patches the same
// weight: keep the files open while the Network may be extended.
type Network[T any] struct {
	Base  *T
	Net   *T
	Stack []Entry
	// Origin is the tree as loaded from its file: Base, unless Combine made Base.
	// CheckpointSave writes the tensors that differ from it (Changed).
	Origin *T
	// Prefix is the ComfyUI state-dict prefix of the tree's keys (UNetPrefix,
	// CLIPPrefix("l"), T5Prefix).
	Prefix string
	Mode   Mode
}

// NewNetwork starts a Network with no LoRA on base.
func NewNetwork[T any](base *T, prefix string, mode Mode) *Network[T] {
	return &Network[T]{Base: base, Net: base, Origin: base, Prefix: prefix, Mode: mode}
}

// Report says what applying one LoRA did to a network.
type Report struct {
	// Applied lists the keys of the weights patched, sorted.
	Applied []string
	// Skipped lists weights whose update did not fit (ComfyUI logs an error and leaves
	// such a weight alone, and so does With), with the reason.
	Skipped []string
	// Merged and Runtime count the layers given merged copies and run-time patches.
	Merged, Runtime int
}

// rooted is implemented by model roots that embed nn.Module.
type rooted interface{ Prefix() (string, bool) }

// Params lists the network's parameters in ComfyUI's naming (Prefix + the key under the
// tree's root), with their shapes: what UNetKeyMap and CLIPKeyMap take.
func (n *Network[T]) Params() ([]Param, error) {
	idx, err := index(n.Base, n.Prefix)
	if err != nil {
		return nil, err
	}
	ps := make([]Param, 0, len(idx))
	for k, s := range idx {
		ps = append(ps, Param{Key: k, Shape: s.tensor().Shape()})
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].Key < ps[j].Key })
	return ps, nil
}

// Tensors returns every parameter Net uses by its key (ComfyUI naming): merged copies
// where the stack merged, Base's own tensors elsewhere. Run-time patches are not folded
// in; Patches lists them.
func (n *Network[T]) Tensors() (map[string]*gpu.Tensor, error) {
	idx, err := index(n.Net, n.Prefix)
	if err != nil {
		return nil, err
	}
	ts := make(map[string]*gpu.Tensor, len(idx))
	for k, s := range idx {
		ts[k] = s.tensor()
	}
	return ts, nil
}

// Weight returns the tensor Net uses for the parameter key (see Tensors).
func (n *Network[T]) Weight(key string) (*gpu.Tensor, error) {
	ts, err := n.Tensors()
	if err != nil {
		return nil, err
	}
	t, ok := ts[key]
	if !ok {
		return nil, fmt.Errorf("lora: the network has no parameter %q", key)
	}
	return t, nil
}

// Patches returns the run-time patches of the layer whose weight is key.
func (n *Network[T]) Patches(key string) ([]nn.Patch, error) {
	idx, err := index(n.Net, n.Prefix)
	if err != nil {
		return nil, err
	}
	switch l := idx[key].layer.(type) {
	case *nn.Linear:
		return l.Patches, nil
	case *nn.Conv:
		return l.Patches, nil
	}
	return nil, fmt.Errorf("lora: %q is not the weight of a linear or conv layer", key)
}

// slot is one parameter: of a layer (its weight, or its bias), or a tensor field
// outside the layers (nn.Fields).
type slot struct {
	layer nn.Layer
	bias  bool
	field **gpu.Tensor
}

// unit is what a patch of the slot recomputes: its layer, or its field.
func (s slot) unit() any {
	if s.field != nil {
		return s.field
	}
	return s.layer
}

func (s slot) tensor() *gpu.Tensor {
	if s.field != nil {
		return *s.field
	}
	switch l := s.layer.(type) {
	case *nn.Linear:
		return pick(s.bias, l.Weight, l.Bias)
	case *nn.Conv:
		return pick(s.bias, l.Weight, l.Bias)
	case *nn.Norm:
		return pick(s.bias, l.Weight, l.Bias)
	case *nn.RMSNorm:
		return l.Weight
	}
	return nil
}

func pick(bias bool, w, b *gpu.Tensor) *gpu.Tensor {
	if bias {
		return b
	}
	return w
}

// index maps the ComfyUI key of every parameter of root's layers to its slot.
func index(root any, prefix string) (map[string]slot, error) {
	r, ok := root.(rooted)
	if !ok {
		return nil, fmt.Errorf("lora: %T does not record its key prefix (embed nn.Module)", root)
	}
	rp, ok := r.Prefix()
	if !ok {
		return nil, fmt.Errorf("lora: %T was not bound from a file; it has no keys", root)
	}
	idx := map[string]slot{}
	err := nn.Layers(root, func(l nn.Layer) error {
		p, ok := l.Prefix()
		rel, under := strings.CutPrefix(p, rp)
		if !ok || !under {
			return nil
		}
		key := prefix + rel
		for _, bias := range []bool{false, true} {
			s := slot{layer: l, bias: bias}
			if s.tensor() != nil {
				idx[key+map[bool]string{false: "weight", true: "bias"}[bias]] = s
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = nn.Fields(root, func(f nn.Field) error {
		if rel, under := strings.CutPrefix(f.Key, rp); under {
			idx[prefix+rel] = slot{field: f.Tensor}
		}
		return nil
	})
	return idx, err
}

// With returns the network with e applied on top of its stack; n is unchanged. Only
// the layers e patches are recomputed, each from Base's tensors with every patch of the
// stack for it, in stack order, as ComfyUI's calculate_weight does; the others are
// shared with n.Net.
func (n *Network[T]) With(rt *gpu.Runtime, e Entry) (*Network[T], *Report, error) {
	if e.Set == nil {
		return nil, nil, errors.New("lora: nil patch set")
	}
	baseIdx, err := index(n.Base, n.Prefix)
	if err != nil {
		return nil, nil, err
	}
	stack := append(append([]Entry(nil), n.Stack...), e)
	touched := map[any]bool{}
	for key, ps := range e.Set.Patches {
		for _, p := range ps {
			if s, ok := baseIdx[key]; ok && p.active(e.Strength) {
				touched[s.unit()] = true
			}
		}
	}
	out := &Network[T]{Base: n.Base, Net: n.Net, Stack: stack, Origin: n.Origin, Prefix: n.Prefix, Mode: n.Mode}
	rep := &Report{}
	if len(touched) == 0 {
		return out, rep, nil
	}
	clone, err := nn.Clone(n.Net)
	if err != nil {
		return nil, nil, err
	}
	cloneIdx, err := index(clone, n.Prefix)
	if err != nil {
		return nil, nil, err
	}
	// Layers in key order, so that reports and errors are deterministic.
	var jobs []layerJob
	for key, s := range baseIdx {
		switch {
		case !touched[s.unit()] || s.bias:
		case s.field != nil:
			jobs = append(jobs, layerJob{key: key, field: *s.field, dstField: cloneIdx[key].field})
		default:
			base := strings.TrimSuffix(key, "weight")
			jobs = append(jobs, layerJob{key: base, base: s.layer, dst: cloneIdx[key].layer})
		}
	}
	sort.Slice(jobs, func(i, j int) bool { return jobs[i].key < jobs[j].key })
	ap := &applier{rt: rt, stack: stack, mode: n.Mode}
	if err := ap.run(jobs, rep); err != nil {
		return nil, nil, err
	}
	sort.Strings(rep.Applied)
	out.Net = clone
	return out, rep, nil
}

// layerJob is one layer to recompute: its key prefix ("diffusion_model.…proj_in."), the
// base layer to read and the clone's layer to write; or one tensor field: its key, the
// base tensor and the clone's field.
type layerJob struct {
	key       string
	base, dst nn.Layer
	field     *gpu.Tensor
	dstField  **gpu.Tensor
}

type applier struct {
	rt    *gpu.Runtime
	stack []Entry
	mode  Mode
}

// run recomputes the layers, several at a time: the matrix products use the runtime's
// GEMM; the elementwise work of one layer is single-threaded.
func (ap *applier) run(jobs []layerJob, rep *Report) error {
	workers := min(runtime.GOMAXPROCS(0), len(jobs))
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		next int
		errs = make([]error, len(jobs))
		reps = make([]Report, len(jobs))
	)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= len(jobs) {
					return
				}
				errs[i] = ap.layer(jobs[i], &reps[i])
			}
		}()
	}
	wg.Wait()
	for i := range jobs {
		if errs[i] != nil {
			return errs[i]
		}
		rep.Applied = append(rep.Applied, reps[i].Applied...)
		rep.Skipped = append(rep.Skipped, reps[i].Skipped...)
		rep.Merged += reps[i].Merged
		rep.Runtime += reps[i].Runtime
	}
	return nil
}

// stacked is one patch of the stack for one parameter.
type stacked struct {
	set      *Set
	patch    Patch
	strength float64
}

func (ap *applier) patchesFor(key string) []stacked {
	var ps []stacked
	for _, e := range ap.stack {
		for _, p := range e.Set.Patches[key] {
			if p.active(e.Strength) {
				ps = append(ps, stacked{e.Set, p, e.Strength})
			}
		}
	}
	return ps
}

// layer recomputes one layer (or tensor field) of the clone from the base.
func (ap *applier) layer(j layerJob, rep *Report) error {
	if j.dstField != nil {
		*j.dstField = j.field
		return ap.vector(j.key, j.field, ap.patchesFor(j.key), j.dstField, rep)
	}
	wKey, bKey := j.key+"weight", j.key+"bias"
	wps, bps := ap.patchesFor(wKey), ap.patchesFor(bKey)
	switch dst := j.dst.(type) {
	case *nn.Linear:
		base := j.base.(*nn.Linear)
		dst.Weight, dst.ScaleWeight, dst.Patches = base.Weight, base.ScaleWeight, nil
		if err := ap.weight(wKey, base.Weight, base.ScaleWeight, wps, &dst.Weight, &dst.ScaleWeight, &dst.Patches, rep); err != nil {
			return err
		}
		dst.Bias = base.Bias
		return ap.vector(bKey, base.Bias, bps, &dst.Bias, rep)
	case *nn.Conv:
		base := j.base.(*nn.Conv)
		dst.Weight, dst.Patches = base.Weight, nil
		var scale *gpu.Tensor
		if err := ap.weight(wKey, base.Weight, nil, wps, &dst.Weight, &scale, &dst.Patches, rep); err != nil {
			return err
		}
		dst.Bias = base.Bias
		return ap.vector(bKey, base.Bias, bps, &dst.Bias, rep)
	case *nn.Norm:
		base := j.base.(*nn.Norm)
		dst.Weight, dst.Bias = base.Weight, base.Bias
		if err := ap.vector(wKey, base.Weight, wps, &dst.Weight, rep); err != nil {
			return err
		}
		return ap.vector(bKey, base.Bias, bps, &dst.Bias, rep)
	case *nn.RMSNorm:
		base := j.base.(*nn.RMSNorm)
		dst.Weight = base.Weight
		return ap.vector(wKey, base.Weight, wps, &dst.Weight, rep)
	}
	return fmt.Errorf("lora: %s: unknown layer type %T", j.key, j.dst)
}

// vector patches a bias, a norm parameter or a tensor field: always merged (a bias or
// norm is small and F32; an embedding table is read whole by its ops).
func (ap *applier) vector(key string, base *gpu.Tensor, ps []stacked, dst **gpu.Tensor, rep *Report) error {
	if len(ps) == 0 || base == nil {
		return nil
	}
	t, ok, err := ap.merge(key, base, nil, ps, rep)
	if err != nil || !ok {
		return err
	}
	*dst = t
	rep.Applied = append(rep.Applied, key)
	return nil
}

// weight patches a Linear or Conv weight: at run time when the mode asks for it and
// every patch has a low-rank form, merged otherwise.
func (ap *applier) weight(key string, base, scale *gpu.Tensor, ps []stacked, dst, dstScale **gpu.Tensor, dstPatches *[]nn.Patch, rep *Report) error {
	if len(ps) == 0 {
		return nil
	}
	if ap.runtime(base, ps) {
		patches, skipped, err := ap.lowRank(key, base.Shape(), ps)
		if err != nil {
			return err
		}
		rep.Skipped = append(rep.Skipped, skipped...)
		if len(patches) > 0 {
			*dstPatches = patches
			rep.Applied = append(rep.Applied, key)
			rep.Runtime++
		}
		return nil
	}
	t, ok, err := ap.merge(key, base, scale, ps, rep)
	if err != nil || !ok {
		return err
	}
	*dst, *dstScale = t, nil
	rep.Applied = append(rep.Applied, key)
	rep.Merged++
	return nil
}

// runtime reports whether a weight takes its patches at run time.
func (ap *applier) runtime(w *gpu.Tensor, ps []stacked) bool {
	switch ap.mode {
	case Merge:
		return false
	case Auto:
		if d := w.DType(); d == gpu.F32 || d == gpu.F16 || d == gpu.BF16 {
			return false
		}
	}
	for _, p := range ps {
		a := p.patch.Adapter
		if a.Kind != KindLoRA || a.DoRA != "" || a.Reshape != nil {
			return false
		}
	}
	return true
}

// mergedDType is the dtype a merged copy is stored in: the weight's own for F32, F16
// and BF16 (ComfyUI rounds the patched weight to the weight's dtype), F16 for float8
// and quantized weights.
func mergedDType(d gpu.DType) gpu.DType {
	if d == gpu.F32 || d == gpu.F16 || d == gpu.BF16 {
		return d
	}
	return gpu.F16
}
