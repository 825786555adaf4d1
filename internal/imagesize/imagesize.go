package imagesize

import (
	"bytes"
	"fmt"
	"image"
)

// DefaultMaxPixels is the limit used when none is configured: Pillow's
// DecompressionBombError threshold (2 × Image.MAX_IMAGE_PIXELS = 2 × 89,478,485), so
// every image ComfyUI opens opens here too.
const DefaultMaxPixels int64 = 2 * 89478485

// TooLargeError is an image over the pixel limit.
type TooLargeError struct {
	Width, Height int
	Max           int64
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("imagesize: image of %dx%d is %d pixels, more than the limit of %d",
		e.Width, e.Height, int64(e.Width)*int64(e.Height), e.Max)
}

// Limit returns max, or DefaultMaxPixels when max is not positive.
func Limit(max int64) int64 {
	if max <= 0 {
		return DefaultMaxPixels
	}
	return max
}

// Check refuses a w×h image of more than max pixels (Limit(max)) with a
// *TooLargeError; a size that is not positive is an error too.
func Check(w, h int, max int64) error {
	if w <= 0 || h <= 0 {
		return fmt.Errorf("imagesize: image size %dx%d is not valid", w, h)
	}
	max = Limit(max)
	if int64(w) > max || int64(h) > max || int64(w)*int64(h) > max {
		return &TooLargeError{Width: w, Height: h, Max: max}
	}
	return nil
}

// DecodeConfig reads only the header of data and checks the image's size.
func DecodeConfig(data []byte, max int64) (image.Config, string, error) {
	cfg, format, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return cfg, format, err
	}
	return cfg, format, Check(cfg.Width, cfg.Height, max)
}

// Decode decodes data (the first frame of an animation) once its header passed
// DecodeConfig.
func Decode(data []byte, max int64) (image.Image, string, error) {
	if _, format, err := DecodeConfig(data, max); err != nil {
		return nil, format, err
	}
	return image.Decode(bytes.NewReader(data))
}
