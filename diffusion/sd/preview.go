package sd

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"sync"
	"time"
)

// rgbProjection is a latent format's latent_rgb_factors (one RGB row per channel) and
// latent_rgb_factors_bias (comfy/latent_formats.py), the cheap Latent2RGB preview.
type rgbProjection struct {
	factors [][3]float32
	bias    [3]float32
}

// latentRGB holds the projections of the formats forgeflow knows, by LatentFormat.Name.
var latentRGB = map[string]rgbProjection{
	"SD15": {factors: [][3]float32{
		{0.3512, 0.2297, 0.3227},
		{0.3250, 0.4974, 0.2350},
		{-0.2829, 0.1762, 0.2721},
		{-0.2120, -0.2616, -0.7177},
	}},
	"SDXL": {factors: [][3]float32{
		{0.3651, 0.4232, 0.4341},
		{-0.2533, -0.0042, 0.1068},
		{0.1076, 0.1111, -0.0362},
		{-0.3165, -0.2492, -0.2188},
	}, bias: [3]float32{0.1084, -0.0175, -0.0011}},
	"Flux": {factors: [][3]float32{
		{-0.0346, 0.0244, 0.0681}, {0.0034, 0.0210, 0.0687}, {0.0275, -0.0668, -0.0433},
		{-0.0174, 0.0160, 0.0617}, {0.0859, 0.0721, 0.0329}, {0.0004, 0.0383, 0.0115},
		{0.0405, 0.0861, 0.0915}, {-0.0236, -0.0185, -0.0259}, {-0.0245, 0.0250, 0.1180},
		{0.1008, 0.0755, -0.0421}, {-0.0515, 0.0201, 0.0011}, {0.0428, -0.0012, -0.0036},
		{0.0817, 0.0765, 0.0749}, {-0.1264, -0.0522, -0.1103}, {-0.0280, -0.0881, -0.0499},
		{-0.1262, -0.0982, -0.0778},
	}, bias: [3]float32{-0.0329, -0.0718, -0.0851}},
	"SD3": {factors: [][3]float32{
		{-0.0922, -0.0175, 0.0749}, {0.0311, 0.0633, 0.0954}, {0.1994, 0.0927, 0.0458},
		{0.0856, 0.0339, 0.0902}, {0.0587, 0.0272, -0.0496}, {-0.0006, 0.1104, 0.0309},
		{0.0978, 0.0306, 0.0427}, {-0.0042, 0.1038, 0.1358}, {-0.0194, 0.0020, 0.0669},
		{-0.0488, 0.0130, -0.0268}, {0.0922, 0.0988, 0.0951}, {-0.0278, 0.0524, -0.0542},
		{0.0332, 0.0456, 0.0895}, {-0.0069, -0.0030, -0.0810}, {-0.0596, -0.0465, -0.0293},
		{-0.1448, -0.1463, -0.1189},
	}, bias: [3]float32{0.2394, 0.2135, 0.1925}},
}

// MaxPreviewSize is the longest side of a preview frame (ComfyUI's --preview-size
// default, 512); larger latents are shown scaled down.
const MaxPreviewSize = 512

// PreviewImage projects the first item of x0 (N, C, H, W, the model's latent space) to
// an RGB image as ComfyUI's Latent2RGBPreviewer does: rgb = factorsᵀ·latent + bias per
// pixel, then (v+1)/2 clamped to [0, 1] and truncated to 8 bits.
func PreviewImage(f LatentFormat, x0 []float32, shape [4]int) (*image.RGBA, error) {
	proj, ok := latentRGB[f.Name]
	if !ok {
		return nil, fmt.Errorf("sd: no latent preview factors for format %q", f.Name)
	}
	c, h, w := shape[1], shape[2], shape[3]
	if c != len(proj.factors) {
		return nil, fmt.Errorf("sd: latent preview: %d channels, format %s has %d", c, f.Name, len(proj.factors))
	}
	if len(x0) < c*h*w || h <= 0 || w <= 0 {
		return nil, fmt.Errorf("sd: latent preview: %d values for shape %v", len(x0), shape)
	}
	// Shrink by an integer stride so the longer side fits MaxPreviewSize.
	stride := 1
	for max(h, w)/stride > MaxPreviewSize {
		stride++
	}
	oh, ow := (h+stride-1)/stride, (w+stride-1)/stride
	img := image.NewRGBA(image.Rect(0, 0, ow, oh))
	hw := h * w
	for y := 0; y < oh; y++ {
		for x := 0; x < ow; x++ {
			p := (y*stride)*w + x*stride
			var rgb [3]float32
			for k := 0; k < 3; k++ {
				v := proj.bias[k]
				for ch := 0; ch < c; ch++ {
					v += x0[ch*hw+p] * proj.factors[ch][k]
				}
				v = (v + 1) / 2
				v = min(max(v, 0), 1)
				rgb[k] = v * 255
			}
			img.SetRGBA(x, y, color.RGBA{R: uint8(rgb[0]), G: uint8(rgb[1]), B: uint8(rgb[2]), A: 255})
		}
	}
	return img, nil
}

// PreviewJPEG encodes PreviewImage as a JPEG (ComfyUI sends previews as JPEG).
func PreviewJPEG(f LatentFormat, x0 []float32, shape [4]int) ([]byte, error) {
	img, err := PreviewImage(f, x0, shape)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 95}); err != nil {
		return nil, fmt.Errorf("sd: latent preview: %w", err)
	}
	return buf.Bytes(), nil
}

// Previewer turns sampling steps into throttled preview frames: at most one frame per
// Interval (the first step always gets one), so a fast sampler on a small latent does
// not flood clients with JPEGs.
type Previewer struct {
	Format   LatentFormat
	Interval time.Duration
	// Send receives each encoded JPEG frame.
	Send func(jpeg []byte)
	// Now is the clock (time.Now when nil; tests set their own).
	Now func() time.Time

	mu   sync.Mutex
	last time.Time
	sent bool
}

// DefaultPreviewInterval is the throttle the nodes use: 4 frames a second at most.
const DefaultPreviewInterval = 250 * time.Millisecond

// Step offers the x0 of a step; it encodes and sends a frame when the throttle allows.
// Formats without preview factors send nothing. Errors are returned for logging; a
// failed preview never stops sampling.
func (p *Previewer) Step(x0 []float32, shape [4]int) error {
	if p == nil || p.Send == nil {
		return nil
	}
	if _, ok := latentRGB[p.Format.Name]; !ok {
		return nil
	}
	now := time.Now
	if p.Now != nil {
		now = p.Now
	}
	t := now()
	p.mu.Lock()
	if p.sent && t.Sub(p.last) < p.Interval {
		p.mu.Unlock()
		return nil
	}
	p.sent, p.last = true, t
	p.mu.Unlock()
	data, err := PreviewJPEG(p.Format, x0, shape)
	if err != nil {
		return err
	}
	p.Send(data)
	return nil
}
