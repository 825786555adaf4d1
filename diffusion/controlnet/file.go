package controlnet

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/diffusion/unet"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// Net is a loaded control model, ComfyUI's CONTROL_NET: a ControlNet, a control-lora
// or a T2I-Adapter. Values are immutable: WithControlType returns a copy. Its tensors
// alias the file's memory mapping.
type Net struct {
	// Name is the file it came from; Kind says what it holds ("controlnet",
	// "controlnet (diffusers)", "control-lora", "t2i-adapter").
	Name, Kind string
	// GlobalAveragePooling replaces each residual by its spatial mean (shuffle
	// ControlNets, told by a file name ending in _shuffle, as load_controlnet does).
	GlobalAveragePooling bool

	model       *Model
	lora        *controlLoRA
	adapter     *Adapter
	controlType []int
	file        *tensorfile.File
}

// Model returns the ControlNet network, nil for a control-lora (built per model) or a
// T2I-Adapter.
func (n *Net) Model() *Model { return n.model }

// Adapter returns the T2I-Adapter, nil for a ControlNet.
func (n *Net) Adapter() *Adapter { return n.adapter }

// ControlType is the union control type set by WithControlType (empty: auto).
func (n *Net) ControlType() []int { return append([]int(nil), n.controlType...) }

// WithControlType returns a copy that runs with the given union control types
// (SetUnionControlNetType's set_extra_arg("control_type", …); empty for "auto"). Other
// networks ignore it, as ComfyUI's do.
func (n *Net) WithControlType(types []int) *Net {
	c := *n
	c.controlType = append([]int(nil), types...)
	return &c
}

// Bytes is the size of the tensors the file maps.
func (n *Net) Bytes() int64 {
	var b int64
	for _, in := range n.file.Tensors() {
		b += in.Size
	}
	return b
}

// Close releases the file mapping; only once the network is no longer used.
func (n *Net) Close() error { return n.file.Close() }

// LoadOptions configure Load.
type LoadOptions struct {
	// Model is DiffControlNetLoader's model: a "difference" ControlNet's tensors are
	// added to its UNet's. nil for ControlNetLoader.
	Model *sd.Model
	// Heads overrides the ControlNet's attention layout (test-sized networks); the
	// zero value takes ComfyUI's.
	Heads  unet.Heads
	Logger *slog.Logger
}

func (o LoadOptions) logger() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// UnsupportedError reports a control model file of a kind not implemented.
type UnsupportedError struct {
	Path, What string
}

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("controlnet: %s: %s are not implemented", e.Path, e.What)
}

// ErrUnknown is returned for a file that holds neither a ControlNet nor a T2I-Adapter.
var ErrUnknown = errors.New("the file does not contain ControlNet or T2I-Adapter data")

// Load reads a control model file (.safetensors or a PyTorch checkpoint) and tells its
// kind from its keys as comfy/controlnet.py load_controlnet_state_dict does.
func Load(rt *gpu.Runtime, path string, opts LoadOptions) (*Net, error) {
	f, err := tensorfile.Open(path, tensorfile.Safetensors, tensorfile.Torch)
	if err != nil {
		return nil, fmt.Errorf("controlnet: %w", err)
	}
	n, err := load(rt, f, path, opts)
	if err != nil {
		f.Close()
		return nil, err
	}
	n.file = f
	stem := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	n.GlobalAveragePooling = strings.HasSuffix(stem, "_shuffle") || strings.HasSuffix(stem, "_shuffle_fp16")
	return n, nil
}

func load(rt *gpu.Runtime, f *tensorfile.File, path string, opts LoadOptions) (*Net, error) {
	src := statedict.NewFileSource(rt, f)
	keys := map[string]bool{}
	for _, k := range src.Keys() {
		keys[k] = true
	}
	name := filepath.Base(path)
	switch {
	case keys["after_proj_list.18.bias"]:
		return nil, &UnsupportedError{Path: name, What: "HunyuanDiT ControlNets"}
	case keys["lora_controlnet"]:
		return &Net{Name: name, Kind: "control-lora", lora: &controlLoRA{src: src}}, nil
	case keys["controlnet_cond_embedding.conv_in.weight"]:
		conv, err := diffusersToLDM(src.Keys())
		if err != nil {
			return nil, err
		}
		for _, k := range sortedKeys(conv) {
			if conv[k] != k {
				src.Alias(conv[k], statedict.Derived{Stored: k})
			}
		}
		union := keys["control_add_embedding.linear_1.bias"]
		m, err := LoadModel(rt, src, "", opts.Heads, union)
		if err != nil {
			return nil, fmt.Errorf("%w (%s)", err, name)
		}
		return &Net{Name: name, Kind: "controlnet (diffusers)", model: m}, nil
	case keys["controlnet_blocks.0.weight"] || keys["controlnet_blocks.0.linear.weight"]:
		return nil, &UnsupportedError{Path: name, What: "SD3, SD3.5, Flux and Qwen-Image ControlNets"}
	case keys["control_model.zero_convs.0.0.weight"]:
		var s statedict.Source = src
		if keys["difference"] {
			if opts.Model == nil {
				opts.logger().Warn("a diff ControlNet loaded without a model will very likely not work; load it with DiffControlNetLoader", "file", name)
			} else {
				base, err := weightsOf(opts.Model)
				if err != nil {
					return nil, fmt.Errorf("controlnet: diff ControlNet %s: %w", name, err)
				}
				s = &diffSource{rt: rt, diff: src, base: base.folded()}
			}
		}
		m, err := LoadModel(rt, s, "control_model.", opts.Heads, false)
		if err != nil {
			return nil, fmt.Errorf("%w (%s)", err, name)
		}
		return &Net{Name: name, Kind: "controlnet", model: m}, nil
	case keys["zero_convs.0.0.weight"]:
		m, err := LoadModel(rt, src, "", opts.Heads, false)
		if err != nil {
			return nil, fmt.Errorf("%w (%s)", err, name)
		}
		return &Net{Name: name, Kind: "controlnet", model: m}, nil
	}
	if keys["adapter.body.0.resnets.0.block1.weight"] {
		for _, k := range src.Keys() {
			if nk := diffusersAdapterKey(k); nk != k {
				src.Alias(nk, statedict.Derived{Stored: k})
			}
		}
	}
	a, err := loadAdapter(rt, src)
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", err, name)
	}
	if a == nil {
		if keys["backbone.0.0.weight"] || keys["backbone.10.blocks.0.weight"] {
			return nil, &UnsupportedError{Path: name, What: "Stable Cascade ControlNets"}
		}
		return nil, fmt.Errorf("controlnet: %s: %w", name, ErrUnknown)
	}
	return &Net{Name: name, Kind: "t2i-adapter", adapter: a}, nil
}

// diffSource serves a "difference" ControlNet: each control_model.X tensor plus the
// model's X where the model has it, rounded to the file's dtype as ComfyUI adds in
// place (cd += model_sd[...].type(cd.dtype)).
type diffSource struct {
	rt         *gpu.Runtime
	diff, base statedict.Source
	baseKeys   map[string]bool
}

func (s *diffSource) Keys() []string { return s.diff.Keys() }

func (s *diffSource) Tensor(key string) (*gpu.Tensor, error) {
	d, err := s.diff.Tensor(key)
	if err != nil {
		return nil, err
	}
	if s.baseKeys == nil {
		s.baseKeys = map[string]bool{}
		for _, k := range s.base.Keys() {
			s.baseKeys[k] = true
		}
	}
	bk, ok := strings.CutPrefix(key, "control_model.")
	if !ok || !s.baseKeys[bk] {
		return d, nil
	}
	defer d.Release()
	b, err := s.base.Tensor(bk)
	if err != nil {
		return nil, err
	}
	defer b.Release()
	if b.Numel() != d.Numel() {
		return nil, fmt.Errorf("controlnet: diff %s %v and the model's %v differ in size", key, d.Shape(), b.Shape())
	}
	dv, err := d.Float32()
	if err != nil {
		return nil, err
	}
	bv, err := b.Float32()
	if err != nil {
		return nil, err
	}
	dt := d.DType()
	if err := roundTo(dt, bv); err != nil {
		return nil, err
	}
	sum := make([]float32, len(dv))
	for i := range dv {
		sum[i] = dv[i] + bv[i]
	}
	if err := roundTo(dt, sum); err != nil {
		return nil, err
	}
	return s.rt.FromFloat32(sum, d.Shape()...)
}

// roundTo rounds float32 values to dtype d in place (a cast to d and back).
func roundTo(d gpu.DType, v []float32) error {
	if d == gpu.F32 {
		return nil
	}
	n, err := d.StorageBytes(len(v))
	if err != nil {
		return err
	}
	buf := make([]byte, n)
	if err := gpu.EncodeFloat32(d, buf, v); err != nil {
		return err
	}
	return gpu.DecodeFloat32(d, v, buf)
}
