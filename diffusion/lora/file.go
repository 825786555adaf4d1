package lora

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights/detect"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// File is an open LoRA file (safetensors or a torch archive): its tensors stay in
// their stored dtype, memory-mapped where the format allows, until Close.
type File struct {
	name string
	file *tensorfile.File
	src  *statedict.FileSource
	// names maps each key as ComfyUI's convert_lora leaves it to the stored tensor.
	names map[string]string
	// Info is what weights/detect recognised (key style, adapters, base family); nil
	// when detection did not take the file for a LoRA.
	Info *detect.LoRAConfig
}

// Open opens the LoRA file at path.
func Open(rt *gpu.Runtime, path string) (*File, error) {
	f, err := tensorfile.Open(path, tensorfile.Safetensors, tensorfile.Torch)
	if err != nil {
		return nil, fmt.Errorf("lora: %w", err)
	}
	l, err := NewFile(rt, f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return l, nil
}

// NewFile reads the LoRA held by an open tensor file; Close closes f.
func NewFile(rt *gpu.Runtime, f *tensorfile.File) (*File, error) {
	l := &File{name: f.Name(), file: f, src: statedict.NewFileSource(rt, f), names: map[string]string{}}
	for _, in := range f.Tensors() {
		l.names[in.Name] = in.Name
	}
	if len(l.names) == 0 {
		return nil, fmt.Errorf("lora: %s holds no tensors", l.name)
	}
	if err := l.convert(); err != nil {
		return nil, err
	}
	if det, err := detect.Detect(detect.FileInput(f)); err == nil && det.LoRA != nil {
		l.Info = det.LoRA
	}
	return l, nil
}

// Name is the file's path.
func (l *File) Name() string { return l.name }

// Close releases the file; patches made from it keep only what they copied.
func (l *File) Close() error { return l.file.Close() }

// Bytes is the size of the file's tensors (what a memory budget counts).
func (l *File) Bytes() int64 {
	var n int64
	for _, in := range l.file.Tensors() {
		n += in.Size
	}
	return n
}

// Keys lists the file's keys as the loader sees them, sorted.
func (l *File) Keys() []string {
	ks := make([]string, 0, len(l.names))
	for k := range l.names {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func (l *File) has(key string) bool {
	_, ok := l.names[key]
	return ok
}

// tensor returns the stored tensor under a loader key.
func (l *File) tensor(key string) (*gpu.Tensor, error) {
	stored, ok := l.names[key]
	if !ok {
		return nil, fmt.Errorf("lora: %s: no tensor %q", l.name, key)
	}
	t, err := l.src.Tensor(stored)
	if err != nil {
		return nil, fmt.Errorf("lora: %s: %w", l.name, err)
	}
	return t, nil
}

// values returns the tensor under key as float32 values and its shape.
func (l *File) values(key string) ([]float32, []int, error) {
	t, err := l.tensor(key)
	if err != nil {
		return nil, nil, err
	}
	defer t.Release()
	v, err := t.Float32()
	if err != nil {
		return nil, nil, fmt.Errorf("lora: %s: %s: %w", l.name, key, err)
	}
	return v, t.Shape(), nil
}

// scalar reads a one-value tensor (alpha).
func (l *File) scalar(key string) (float64, error) {
	v, _, err := l.values(key)
	if err != nil {
		return 0, err
	}
	if len(v) != 1 {
		return 0, &FormatError{File: l.name, Key: key, Msg: fmt.Sprintf("%d values, want one", len(v))}
	}
	return float64(v[0]), nil
}

// convert renames keys as comfy/lora_convert.py convert_lora does for the layouts it
// knows: XLabs/USO Flux LoRAs get ComfyUI's names (the stored tensors are served under
// them); BFL's control LoRAs, which widen Flux's input layer, are refused.
func (l *File) convert() error {
	switch {
	case l.has("img_in.lora_A.weight") && l.has("single_blocks.0.norm.key_norm.scale"):
		return &UnsupportedError{File: l.name, What: "BFL control LoRAs (Flux Canny/Depth) widen the model's input layer; they are not implemented"}
	case l.has("single_blocks.37.processor.qkv_lora.up.weight") && l.has("double_blocks.18.processor.qkv_lora2.up.weight"):
		renamed := map[string]string{}
		for k, stored := range l.names {
			renamed[usoName(k)] = stored
		}
		l.names = renamed
	}
	return nil
}

// usoName is convert_uso_lora's renaming of one key: the replacements one after the
// other, each on the previous one's result.
func usoName(k string) string {
	for _, r := range [][2]string{{".down.weight", ".lora_down.weight"}, {".up.weight", ".lora_up.weight"},
		{".qkv_lora2.", ".txt_attn.qkv."}, {".qkv_lora1.", ".img_attn.qkv."},
		{".proj_lora1.", ".img_attn.proj."}, {".proj_lora2.", ".txt_attn.proj."},
		{".qkv_lora.", ".linear1_qkv."}, {".proj_lora.", ".linear2."}, {".processor.", "."}} {
		k = strings.ReplaceAll(k, r[0], r[1])
	}
	return "diffusion_model." + k
}

// FormatError is a LoRA file whose tensors do not make a valid adapter.
type FormatError struct {
	File, Key, Msg string
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("lora: invalid file %s: %s: %s", e.File, e.Key, e.Msg)
}

// UnsupportedError is a valid LoRA file using a feature not implemented.
type UnsupportedError struct {
	File, What string
}

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("lora: unsupported feature in %s: %s", e.File, e.What)
}

// errShape marks an update whose shape does not fit its weight; ComfyUI logs such
// modules and leaves the weight alone, and so does Apply (it lists them in the Report).
var errShape = errors.New("shape does not fit the weight")
