package sd

import (
	"fmt"
	"math"

	"github.com/forgeflow/forgeflow/gpu/resample"
)

// resolveRegion is resolve_areas_and_cond_masks_multidim (comfy/samplers.py) for one
// entry and a latent of h×w: a percentage area becomes latent units (rounded half to
// even, as Python's round; the size at least 1), the mask is resized bilinearly to the
// latent, and with SetAreaToBounds the area becomes the bounding box of the mask's
// non-zero pixels over its whole batch, at least 8×8 (an all-zero mask: 8×8 at the
// origin). It returns the area (nil for the whole latent) and the mask's planes
// (nil without a mask).
func resolveRegion(c Cond, h, w int) (*Area, []float32, int, error) {
	area := c.Area
	if p := c.AreaPercent; p != nil {
		if c.Area != nil {
			return nil, nil, 0, fmt.Errorf("both an area and a percentage area are set")
		}
		for _, v := range []float64{p.Height, p.Width, p.Y, p.X} {
			if !(v >= 0 && v <= 1) {
				return nil, nil, 0, fmt.Errorf("percentage area %+v is not within 0..1", *p)
			}
		}
		round := func(f float64, size int) int { return int(math.RoundToEven(f * float64(size))) }
		area = &Area{Height: max(1, round(p.Height, h)), Width: max(1, round(p.Width, w)), Y: round(p.Y, h), X: round(p.X, w)}
	}
	m := c.Mask
	if m == nil {
		return area, nil, 0, nil
	}
	if m.N <= 0 || m.H <= 0 || m.W <= 0 || len(m.Data) != m.N*m.H*m.W {
		return nil, nil, 0, fmt.Errorf("mask of %d values is not a non-empty (%d, %d, %d) mask", len(m.Data), m.N, m.H, m.W)
	}
	data := m.Data
	if m.H != h || m.W != w {
		var err error
		if data, err = resample.Upscale(m.Data, m.N, 1, m.H, m.W, w, h, "bilinear", "disabled"); err != nil {
			return nil, nil, 0, fmt.Errorf("mask: %w", err)
		}
	}
	if c.SetAreaToBounds {
		area = maskBounds(data, m.N, h, w)
	}
	return area, data, m.N, nil
}

// maskBounds is the "mask bounds" area: get_mask_aabb of the batch's largest |value|
// per pixel, grown to at least 8×8 latent pixels (areaAndMult clamps it to the latent).
func maskBounds(data []float32, n, h, w int) *Area {
	y0, x0, y1, x1 := h, w, -1, -1
	for b := 0; b < n; b++ {
		for y := 0; y < h; y++ {
			row := data[(b*h+y)*w : (b*h+y+1)*w]
			for x, v := range row {
				if v != 0 { // NaN counts as set, as torch.where does
					y0, y1 = min(y0, y), max(y1, y)
					x0, x1 = min(x0, x), max(x1, x)
				}
			}
		}
	}
	if y1 < 0 {
		return &Area{Height: 8, Width: 8}
	}
	return &Area{Height: max(8, y1-y0+1), Width: max(8, x1-x0+1), Y: y0, X: x0}
}

// maskMult is get_area_and_mult's weight for a masked entry: each mask plane cut to the
// region, times mask_strength, times strength (in that order, in float32, so the
// products round as ComfyUI's do). No feathering: a mask brings its own edges.
func maskMult(c *modelCond, h, w int, e *activeEntry) {
	e.multN = c.maskN
	e.mult = make([]float32, c.maskN*e.ah*e.aw)
	for b := 0; b < c.maskN; b++ {
		for yy := 0; yy < e.ah; yy++ {
			src := c.mask[(b*h+e.y0+yy)*w+e.x0:]
			dst := e.mult[(b*e.ah+yy)*e.aw:]
			for xx := 0; xx < e.aw; xx++ {
				dst[xx] = src[xx] * c.maskStrength * c.strength
			}
		}
	}
}
