package upscale

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// Model is a loaded super-resolution network with what spandrel's ImageModelDescriptor
// says about it.
type Model struct {
	// Arch is spandrel's architecture name: "ESRGAN", "RealESRGAN Compact" or "SPAN".
	Arch string
	// Tags describe the variant as spandrel's tags do ("64nf", "23nb", "unshuffle", …).
	Tags []string
	// Scale is the upscaling factor of the whole model (after a pixel unshuffle).
	Scale int
	// InChannels and OutChannels are the image channels it takes and gives.
	InChannels, OutChannels int
	// Size is what the input's height and width must satisfy; Upscale pads to it.
	Size SizeRequirements

	net  network
	file *tensorfile.File
}

// SizeRequirements is spandrel's SizeRequirements: a height and width of at least
// Minimum and a multiple of MultipleOf.
type SizeRequirements struct {
	Minimum, MultipleOf int
}

// padding returns how many rows and columns (bottom, right) bring h×w to the
// requirements (SizeRequirements.get_padding).
func (s SizeRequirements) padding(h, w int) (ph, pw int) {
	m := max(s.MultipleOf, 1)
	up := func(x int) int { return (max(x, s.Minimum) + m - 1) / m * m }
	return up(h) - h, up(w) - w
}

// network is one architecture's forward pass.
type network interface {
	// forward maps x (1, in, h, w) F32, h and w meeting the model's size requirements,
	// to (1, out, h·scale, w·scale).
	forward(rt *gpu.Runtime, x *gpu.Tensor) (*gpu.Tensor, error)
	// peakBytes bounds the activation memory forward holds at once on an h×w input.
	peakBytes(h, w int) int64
	// flops is the multiply-add count ×2 of forward on an h×w input (convolutions only).
	flops(h, w int) float64
}

// Forward runs the network on x (1, InChannels, h, w) F32 whose size meets Size, as the
// module's forward does (no padding, no clamping): (1, OutChannels, h·Scale, w·Scale).
func (m *Model) Forward(rt *gpu.Runtime, x *gpu.Tensor) (*gpu.Tensor, error) {
	if x.Rank() != 4 || x.Dim(0) != 1 || x.Dim(1) != m.InChannels {
		return nil, fmt.Errorf("upscale: %s input %v, want (1, %d, h, w)", m.Arch, x.Shape(), m.InChannels)
	}
	if ph, pw := m.Size.padding(x.Dim(2), x.Dim(3)); ph != 0 || pw != 0 {
		return nil, fmt.Errorf("upscale: %s input %dx%d does not meet the size requirements %+v", m.Arch, x.Dim(3), x.Dim(2), m.Size)
	}
	return m.net.forward(rt, x)
}

// PeakBytes estimates the activation memory of one forward pass on an h×w input (after
// padding to Size): what the tile-size choice of Upscale compares with its budget.
func (m *Model) PeakBytes(h, w int) int64 {
	ph, pw := m.Size.padding(h, w)
	return m.net.peakBytes(h+ph, w+pw)
}

// FLOPs is the floating-point operation count of one forward pass on an h×w input
// (2 per multiply-add of the convolutions), for throughput figures.
func (m *Model) FLOPs(h, w int) float64 {
	ph, pw := m.Size.padding(h, w)
	return m.net.flops(h+ph, w+pw)
}

// Bytes is the size of the model's tensors as stored.
func (m *Model) Bytes() int64 {
	var n int64
	for _, t := range m.file.Tensors() {
		n += t.Size
	}
	return n
}

// WeightDType is the dtype the weights are stored (and computed) in.
func (m *Model) WeightDType() weights.DType {
	for _, t := range m.file.Tensors() {
		if len(t.Shape) == 4 {
			return t.DType
		}
	}
	return ""
}

// Close releases the file the weights are mapped from; the model is unusable after.
func (m *Model) Close() error { return m.file.Close() }

// String describes the model as spandrel's tags do: "ESRGAN 4x (64nf, 23nb)".
func (m *Model) String() string {
	return fmt.Sprintf("%s %dx (%s)", m.Arch, m.Scale, strings.Join(m.Tags, ", "))
}

// UnsupportedError reports a checkpoint of an architecture forgeflow does not run:
// one spandrel knows (Arch set) or none it recognises.
type UnsupportedError struct {
	File string
	Arch string
}

func (e *UnsupportedError) Error() string {
	if e.Arch == "" {
		return fmt.Sprintf("upscale: %s: not an upscale model of a known architecture (supported: %s)", e.File, supportedList())
	}
	return fmt.Sprintf("upscale: %s: %s models are not supported (supported: %s)", e.File, e.Arch, supportedList())
}

// Load opens an upscale model file (.pth, .safetensors, …) and builds its network on
// rt. The weights alias the file's mapping until Close.
func Load(rt *gpu.Runtime, path string) (*Model, error) {
	f, err := tensorfile.Open(path)
	if err != nil {
		return nil, err
	}
	m, err := LoadFile(rt, f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return m, nil
}

// LoadFile builds the model held by an open tensor file, which it then owns.
func LoadFile(rt *gpu.Runtime, f *tensorfile.File) (*Model, error) {
	src := statedict.NewFileSource(rt, f)
	sd, a := detect(src)
	if a == nil {
		return nil, &UnsupportedError{File: f.Name()}
	}
	if a.load == nil {
		return nil, &UnsupportedError{File: f.Name(), Arch: a.name}
	}
	m, err := a.load(rt, sd)
	if err != nil {
		return nil, fmt.Errorf("upscale: %s: %s: %w", f.Name(), a.name, err)
	}
	m.Arch, m.file = a.name, f
	return m, nil
}

// stateDict is a checkpoint's tensors under the names a loader asks for: a view of the
// file's keys after spandrel's canonicalisation (and, for old ESRGAN layouts, its
// conversion to the BasicSR names).
type stateDict struct {
	src    *statedict.FileSource
	keys   []string
	stored map[string]string // name → stored key
}

func newStateDict(src *statedict.FileSource, stored map[string]string) *stateDict {
	d := &stateDict{src: src, stored: stored}
	for k := range stored {
		d.keys = append(d.keys, k)
	}
	slices.Sort(d.keys)
	return d
}

// Keys implements statedict.Source.
func (d *stateDict) Keys() []string { return d.keys }

// Tensor implements statedict.Source.
func (d *stateDict) Tensor(key string) (*gpu.Tensor, error) {
	s, ok := d.stored[key]
	if !ok {
		return nil, fmt.Errorf("no tensor %q", key)
	}
	return d.src.Tensor(s)
}

func (d *stateDict) has(key string) bool { _, ok := d.stored[key]; return ok }

// bind fills dst from the tensors under prefix.
func (d *stateDict) bind(rt *gpu.Runtime, prefix string, dst any) error {
	_, err := statedict.Bind(rt, d, prefix, dst)
	return err
}

// seqLen is spandrel's get_seq_len: one more than the largest index i of a key
// "<prefix>.<i>.…" (0 when there is none).
func (d *stateDict) seqLen(prefix string) int {
	n := 0
	for _, k := range d.keys {
		rest, ok := strings.CutPrefix(k, prefix+".")
		if !ok {
			continue
		}
		idx, _, _ := strings.Cut(rest, ".")
		if i, err := atoi(idx); err == nil {
			n = max(n, i+1)
		}
	}
	return n
}

// atoi parses a non-negative decimal index.
func atoi(s string) (int, error) {
	if s == "" || len(s) > 9 {
		return 0, errors.New("not an index")
	}
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, errors.New("not an index")
		}
		n = n*10 + int(c-'0')
	}
	return n, nil
}
