package builtin

import "fmt"

// IMAGE and MASK values.
//
// ComfyUI passes an IMAGE as a torch tensor of shape [B, H, W, C], float32, values in 0..1
// (C is 3 for RGB, 4 when a node keeps alpha), and a MASK as [B, H, W] float32 (1 means
// "masked": LoadImage stores 1 - alpha). forgeflow keeps the same layout in plain Go
// slices so that any node family (VAE decode, upscalers, savers) can produce and consume
// them without a tensor runtime: Image.Pix[((b*H+y)*W+x)*C+c] and
// Mask.Pix[(b*H+y)*W+x].
//
// Values are immutable once returned from a node: the executor caches outputs and hands
// the same value to every consumer, so a node that changes pixels allocates a new value.

// Image is ComfyUI's IMAGE: Batch images of Height×Width pixels with Channels channels,
// float32, stored [B, H, W, C] row-major.
type Image struct {
	Batch, Height, Width, Channels int
	Pix                            []float32
}

// Mask is ComfyUI's MASK: Batch planes of Height×Width float32 values, stored [B, H, W].
type Mask struct {
	Batch, Height, Width int
	Pix                  []float32
}

// MaxValues bounds the number of float32 values one IMAGE or MASK may hold (4 GiB), so
// that a widget value like EmptyImage 16384×16384×4096 is refused with an error rather
// than exhausting memory.
const MaxValues = 1 << 30

// sizeOf returns the product of dims, or an error when a dimension is negative or the
// product exceeds MaxValues.
func sizeOf(kind string, dims ...int) (int, error) {
	n := 1
	for _, d := range dims {
		if d < 0 {
			return 0, fmt.Errorf("builtin: %s shape %v has a negative dimension", kind, dims)
		}
		if d != 0 && n > MaxValues/d {
			return 0, fmt.Errorf("builtin: %s shape %v is too large (more than %d values)", kind, dims, MaxValues)
		}
		n *= d
	}
	return n, nil
}

// NewImage returns a zeroed image of the given shape.
func NewImage(batch, height, width, channels int) (*Image, error) {
	n, err := sizeOf("image", batch, height, width, channels)
	if err != nil {
		return nil, err
	}
	return &Image{Batch: batch, Height: height, Width: width, Channels: channels, Pix: make([]float32, n)}, nil
}

// NewMask returns a zeroed mask of the given shape.
func NewMask(batch, height, width int) (*Mask, error) {
	n, err := sizeOf("mask", batch, height, width)
	if err != nil {
		return nil, err
	}
	return &Mask{Batch: batch, Height: height, Width: width, Pix: make([]float32, n)}, nil
}

// Validate reports whether the shape is consistent with the data.
func (im *Image) Validate() error {
	if im == nil {
		return fmt.Errorf("builtin: nil image")
	}
	n, err := sizeOf("image", im.Batch, im.Height, im.Width, im.Channels)
	if err != nil {
		return err
	}
	if n != len(im.Pix) {
		return fmt.Errorf("builtin: image [%d,%d,%d,%d] holds %d values, want %d",
			im.Batch, im.Height, im.Width, im.Channels, len(im.Pix), n)
	}
	return nil
}

// Validate reports whether the shape is consistent with the data.
func (m *Mask) Validate() error {
	if m == nil {
		return fmt.Errorf("builtin: nil mask")
	}
	n, err := sizeOf("mask", m.Batch, m.Height, m.Width)
	if err != nil {
		return err
	}
	if n != len(m.Pix) {
		return fmt.Errorf("builtin: mask [%d,%d,%d] holds %d values, want %d",
			m.Batch, m.Height, m.Width, len(m.Pix), n)
	}
	return nil
}

// Shape returns [B, H, W, C], the tensor shape ComfyUI reports.
func (im *Image) Shape() []int { return []int{im.Batch, im.Height, im.Width, im.Channels} }

// Shape returns [B, H, W].
func (m *Mask) Shape() []int { return []int{m.Batch, m.Height, m.Width} }

// Frame returns the pixels of batch item b ([H, W, C]), sharing memory with im.
func (im *Image) Frame(b int) []float32 {
	n := im.Height * im.Width * im.Channels
	return im.Pix[b*n : (b+1)*n]
}

// Plane returns batch item b of the mask ([H, W]), sharing memory with m.
func (m *Mask) Plane(b int) []float32 {
	n := m.Height * m.Width
	return m.Pix[b*n : (b+1)*n]
}

// NCHW returns the pixels transposed to [B, C, H, W] (torch's image.movedim(-1, 1)).
func (im *Image) NCHW() []float32 {
	out := make([]float32, len(im.Pix))
	hw := im.Height * im.Width
	for b := 0; b < im.Batch; b++ {
		src := im.Frame(b)
		dst := out[b*hw*im.Channels:]
		for p := 0; p < hw; p++ {
			for c := 0; c < im.Channels; c++ {
				dst[c*hw+p] = src[p*im.Channels+c]
			}
		}
	}
	return out
}

// ImageFromNCHW builds an image from [B, C, H, W] data (torch's movedim(1, -1)).
func ImageFromNCHW(data []float32, batch, channels, height, width int) (*Image, error) {
	im, err := NewImage(batch, height, width, channels)
	if err != nil {
		return nil, err
	}
	if len(data) != len(im.Pix) {
		return nil, fmt.Errorf("builtin: NCHW data holds %d values, shape [%d,%d,%d,%d] needs %d",
			len(data), batch, channels, height, width, len(im.Pix))
	}
	hw := height * width
	for b := 0; b < batch; b++ {
		src := data[b*hw*channels:]
		dst := im.Frame(b)
		for p := 0; p < hw; p++ {
			for c := 0; c < channels; c++ {
				dst[p*channels+c] = src[c*hw+p]
			}
		}
	}
	return im, nil
}
