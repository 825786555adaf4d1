package builtin

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// ImageQuantize (comfy_extras/nodes_post_processing.py Quantize). ComfyUI hands each image
// to Pillow: Image.quantize(colors) builds a median-cut palette (libImaging/Quant.c,
// method 0, no k-means), then Image.quantize(palette=…) maps the pixels to it through
// Pillow's palette cache (libImaging/Palette.c, Convert.c topalette), with Pillow's
// Floyd–Steinberg error diffusion or, for "bayer-N", after ComfyUI adds an ordered-dither
// matrix itself. The functions below re-derive those steps from Pillow 11.1's source, so
// the palette and every pixel equal ComfyUI's.

// ImageQuantize reduces each image of the batch to at most colors colours.
type ImageQuantize struct {
	Image  *Image `input:"image"`
	Colors int    `input:"colors"`
	Dither string `input:"dither"`
}

// Schema implements nodes.Typed.
func (*ImageQuantize) Schema() graph.Schema {
	return graph.Schema{
		Name: "ImageQuantize", Category: "image/postprocessing", PythonModule: "comfy_extras.nodes_post_processing",
		Inputs: []graph.Input{
			socketV3("image", "IMAGE"),
			{Name: "colors", Type: graph.TypeInt, Default: 256, Min: graph.Num(1), Max: graph.Num(256), Step: graph.Num(1)},
			comboV3("dither", "none", "floyd-steinberg", "bayer-2", "bayer-4", "bayer-8", "bayer-16"),
		},
		Outputs: outputs("IMAGE"),
		Extra:   v3Extra(1, nil),
	}
}

// Run implements nodes.Typed. Pixels are converted to bytes as ComfyUI does,
// (v·255).to(uint8) (truncation; values outside [0, 1] are clamped here, where torch's
// conversion is undefined).
func (n *ImageQuantize) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	im := n.Image
	if im.Channels != 3 {
		return nodes.Result{}, fmt.Errorf("builtin: ImageQuantize: the image has %d channels; ComfyUI quantizes RGB images only", im.Channels)
	}
	order := 0
	if o, ok := strings.CutPrefix(n.Dither, "bayer-"); ok {
		var err error
		if order, err = strconv.Atoi(o); err != nil || order < 2 || order&(order-1) != 0 {
			return nodes.Result{}, fmt.Errorf("builtin: ImageQuantize: unknown dither %q", n.Dither)
		}
	} else if n.Dither != "none" && n.Dither != "floyd-steinberg" {
		return nodes.Result{}, fmt.Errorf("builtin: ImageQuantize: unknown dither %q", n.Dither)
	}
	out, err := NewImage(im.Batch, im.Height, im.Width, 3)
	if err != nil {
		return nodes.Result{}, err
	}
	px := make([]uint8, im.Height*im.Width*3)
	for b := 0; b < im.Batch; b++ {
		if err := ctx.Err(); err != nil {
			return nodes.Result{}, err
		}
		for i, v := range im.Frame(b) {
			px[i] = uint8(min(max(v*255, 0), 255))
		}
		pal := medianCutPalette(px, n.Colors)
		m := newPaletteMap(pal)
		var idx []uint8
		switch {
		case order > 0:
			idx = m.mapPixels(bayerDither(px, im.Width, order, len(pal)))
		case n.Dither == "floyd-steinberg":
			idx = m.floydSteinberg(px, im.Width)
		default:
			idx = m.mapPixels(px)
		}
		dst := out.Frame(b)
		for i, c := range idx {
			for k := 0; k < 3; k++ {
				dst[3*i+k] = float32(pal[c][k]) / 255
			}
		}
	}
	return nodes.One(out, nil)
}

// maxHashEntries is Quant.c's MAX_HASH_ENTRIES: with more distinct colours than this the
// histogram drops low bits of every channel until they fit.
const maxHashEntries = 65536

// pixelHash is Quant.c's PIXEL_HASH. Quant.c's pixel table compares keys by this hash, so
// two colours with one hash count as one; the histogram keeps that.
func pixelHash(r, g, b uint8) uint32 {
	return uint32(r)*463 ^ (uint32(g)<<8)*10069 ^ (uint32(b)<<16)*64997
}

// qEntry is one histogram colour: its channels (shifted right by the scale) and count.
type qEntry struct {
	v     [3]uint8
	count uint32
	right bool // splitlists' flag
	box   int  // the palette entry of its median-cut box
}

// qBox is a median-cut box: its colours sorted (descending) along each axis.
type qBox struct {
	lists      [3][]*qEntry
	pixelCount uint32
	l, r       *qBox
}

func (b *qBox) volume() int {
	v := 1
	for a := 0; a < 3; a++ {
		l := b.lists[a]
		v *= int(l[0].v[a]) - int(l[len(l)-1].v[a]) + 1
	}
	return v
}

// split is Quant.c split/splitlists: the axis of largest luminance-weighted range, cut
// where half the pixels are passed (the run of equal values at the cut stays left; if
// nothing is left over, the run at the far end goes right).
func (b *qBox) split() {
	weights := [3]int{77, 150, 29}
	axis, best := 0, 0
	for a := 0; a < 3; a++ {
		l := b.lists[a]
		f := (int(l[0].v[a]) - int(l[len(l)-1].v[a])) * weights[a]
		if a == 0 || best < f {
			axis, best = a, f
		}
	}
	list := b.lists[axis]
	var left uint32
	var counts [2]uint32
	i := 0
	for i < len(list) {
		c := list[i]
		left += c.count
		counts[0] += c.count
		c.right = false
		i++
		if left*2 > b.pixelCount {
			break
		}
	}
	if i < len(list) {
		split := list[i-1].v[axis]
		for ; i < len(list) && list[i].v[axis] == split; i++ {
			list[i].right = false
			counts[0] += list[i].count
		}
	}
	nRight := 0
	for ; i < len(list); i++ {
		list[i].right = true
		nRight++
		counts[1] += list[i].count
	}
	if nRight == 0 {
		tail := list[len(list)-1].v[axis]
		for j := len(list) - 1; j >= 0 && list[j].v[axis] == tail; j-- {
			list[j].right = true
			counts[0] -= list[j].count
			counts[1] += list[j].count
		}
	}
	b.l, b.r = &qBox{pixelCount: counts[0]}, &qBox{pixelCount: counts[1]}
	for a := 0; a < 3; a++ {
		for _, c := range b.lists[a] {
			if c.right {
				b.r.lists[a] = append(b.r.lists[a], c)
			} else {
				b.l.lists[a] = append(b.l.lists[a], c)
			}
		}
	}
	b.lists = [3][]*qEntry{}
}

// boxHeap is QuantHeap.c: a binary max-heap on pixelCount, 1-based, whose sift rules
// decide which of two equal boxes is split first.
type boxHeap []*qBox

func (h *boxHeap) add(b *qBox) {
	if len(*h) == 0 {
		*h = append(*h, nil)
	}
	*h = append(*h, b)
	k := len(*h) - 1
	for k != 1 {
		if int(b.pixelCount)-int((*h)[k/2].pixelCount) <= 0 {
			break
		}
		(*h)[k] = (*h)[k/2]
		k >>= 1
	}
	(*h)[k] = b
}

func (h *boxHeap) remove() (*qBox, bool) {
	hp := *h
	count := len(hp) - 1
	if count <= 0 {
		return nil, false
	}
	r := hp[1]
	v := hp[count]
	count--
	k := 1
	for k*2 <= count {
		l := k * 2
		if l < count && int(hp[l].pixelCount)-int(hp[l+1].pixelCount) < 0 {
			l++
		}
		if int(v.pixelCount)-int(hp[l].pixelCount) > 0 {
			break
		}
		hp[k] = hp[l]
		k = l
	}
	hp[k] = v
	*h = hp[:count+1]
	return r, true
}

// medianCutPalette is Quant.c quantize's palette: the histogram of px (RGB bytes), the
// median cut into at most colors boxes, and each box's average colour over the pixels
// that fall in it, rounded half up; boxes in tree order, left first.
func medianCutPalette(px []uint8, colors int) [][3]uint8 {
	n := len(px) / 3
	var entries []*qEntry
	pixEntry := make([]int32, n) // each pixel's histogram entry at the final scale
	for scale := uint(0); ; scale++ {
		index := make(map[uint32]int32, min(n, maxHashEntries+1))
		entries = entries[:0]
		for i := 0; i < n; i++ {
			r, g, b := px[3*i]>>scale, px[3*i+1]>>scale, px[3*i+2]>>scale
			k := pixelHash(r, g, b)
			j, ok := index[k]
			if !ok {
				j = int32(len(entries))
				index[k] = j
				entries = append(entries, &qEntry{v: [3]uint8{r, g, b}})
				if len(entries) > maxHashEntries && scale < 8 {
					break // this scale cannot hold the image: Quant.c rehashes one bit coarser
				}
			}
			entries[j].count++
			pixEntry[i] = j
		}
		if len(entries) <= maxHashEntries || scale == 8 {
			break
		}
	}
	root := &qBox{pixelCount: uint32(n)}
	for a := 0; a < 3; a++ {
		l := slices.Clone(entries)
		slices.SortStableFunc(l, func(x, y *qEntry) int { return int(y.v[a]) - int(x.v[a]) })
		root.lists[a] = l
	}
	var h boxHeap
	h.add(root)
	for left := colors - 1; left > 0; left-- {
		var b *qBox
		for {
			var ok bool
			if b, ok = h.remove(); !ok {
				goto done
			}
			if b.volume() != 1 {
				break
			}
		}
		b.split()
		h.add(b.l)
		h.add(b.r)
	}
done:
	var leaves int
	var walk func(b *qBox)
	walk = func(b *qBox) {
		if b.l != nil {
			walk(b.l)
			walk(b.r)
			return
		}
		if len(b.lists[0]) == 0 {
			return
		}
		for _, e := range b.lists[0] {
			e.box = leaves
		}
		leaves++
	}
	walk(root)
	sums := make([][3]uint32, leaves)
	counts := make([]uint32, leaves)
	for i := 0; i < n; i++ {
		j := entries[pixEntry[i]].box
		for c := 0; c < 3; c++ {
			sums[j][c] += uint32(px[3*i+c])
		}
		counts[j]++
	}
	pal := make([][3]uint8, leaves)
	for j := range pal {
		for c := 0; c < 3; c++ {
			pal[j][c] = uint8(int(0.5 + float64(sums[j][c])/float64(counts[j])))
		}
	}
	return pal
}

// paletteMap is Pillow's palette cache (Palette.c): a colour maps to the palette entry
// nearest (squared RGB distance, lowest index on ties) to the corner (r&^3, g&^3, b&^3)
// of its 4×4×4 cache cell.
type paletteMap struct {
	pal   [][3]uint8
	cache []int16
}

func newPaletteMap(pal [][3]uint8) *paletteMap {
	m := &paletteMap{pal: pal, cache: make([]int16, 64*64*64)}
	for i := range m.cache {
		m.cache[i] = -1
	}
	return m
}

func (m *paletteMap) nearest(r, g, b int) uint8 {
	k := r>>2 + (g>>2)*64 + (b>>2)*64*64
	if c := m.cache[k]; c >= 0 {
		return uint8(c)
	}
	r0, g0, b0 := r&^3, g&^3, b&^3
	best, bestD := 0, math.MaxInt
	for i, p := range m.pal {
		dr, dg, db := r0-int(p[0]), g0-int(p[1]), b0-int(p[2])
		if d := dr*dr + dg*dg + db*db; d < bestD {
			best, bestD = i, d
		}
	}
	m.cache[k] = int16(best)
	return uint8(best)
}

// mapPixels is topalette without dithering.
func (m *paletteMap) mapPixels(px []uint8) []uint8 {
	out := make([]uint8, len(px)/3)
	for i := range out {
		out[i] = m.nearest(int(px[3*i]), int(px[3*i+1]), int(px[3*i+2]))
	}
	return out
}

func clip8(v int) int { return min(max(v, 0), 255) }

// floydSteinberg is topalette's error diffusion, integer for integer (errors in
// sixteenths, carried along the row and into the next through one buffer), including
// its end-of-row store of the blue terms into all three slots past the row.
func (m *paletteMap) floydSteinberg(px []uint8, w int) []uint8 {
	out := make([]uint8, len(px)/3)
	h := len(out) / w
	errs := make([]int, (w+1)*3)
	for y := 0; y < h; y++ {
		var r, r0, r1, g, g0, g1, b, b0, b1, b2 int
		e := 0
		for x := 0; x < w; x++ {
			in := px[(y*w+x)*3:]
			r = clip8(int(in[0]) + (r+errs[e+3])/16)
			g = clip8(int(in[1]) + (g+errs[e+4])/16)
			b = clip8(int(in[2]) + (b+errs[e+5])/16)
			c := m.nearest(r, g, b)
			out[y*w+x] = c
			p := m.pal[c]
			r -= int(p[0])
			g -= int(p[1])
			b -= int(p[2])
			r, r0, r1, _ = diffuse(r, r0, r1, &errs[e])
			g, g0, g1, _ = diffuse(g, g0, g1, &errs[e+1])
			b, b0, b1, b2 = diffuse(b, b0, b1, &errs[e+2])
			e += 3
		}
		errs[e], errs[e+1], errs[e+2] = b0, b1, b2
	}
	return out
}

// diffuse spreads one channel's error v (7/16 right, 3/16, 5/16 and 1/16 below, as
// running sums): it stores the slot below-left and returns the new carry, the two
// pending sums and v itself.
func diffuse(v, s0, s1 int, below *int) (carry, n0, n1, orig int) {
	orig = v
	d2 := v + v
	v += d2
	*below = v + s0
	v += d2
	n0 = v + s1
	n1 = orig
	v += d2
	return v, n0, n1, orig
}

// bayerDither is Quantize.bayer's pixel step: an order×order normalised Bayer matrix
// times 2·256/colours plus 0.5 (float32, as numpy computes it) added to every channel,
// clamped and truncated to bytes.
func bayerDither(px []uint8, w, order, colors int) []uint8 {
	mat := []float32{0}
	size := 1
	for q := 4; size < order; q *= 4 {
		next := make([]float32, 4*size*size)
		fq := float32(q)
		for y := 0; y < size; y++ {
			for x := 0; x < size; x++ {
				v := fq * mat[y*size+x]
				next[y*2*size+x] = (v - 1.5) / fq
				next[y*2*size+x+size] = (v + 0.5) / fq
				next[(y+size)*2*size+x] = (v + 1.5) / fq
				next[(y+size)*2*size+x+size] = (v - 0.5) / fq
			}
		}
		mat, size = next, 2*size
	}
	spread := float32(2 * 256 / float64(colors))
	for i := range mat {
		mat[i] = spread*mat[i] + 0.5
	}
	out := make([]uint8, len(px))
	for i := range out {
		p := i / 3
		y, x := p/w, p%w
		v := float32(px[i]) + mat[(y%order)*order+x%order]
		out[i] = uint8(min(max(v, 0), 255))
	}
	return out
}

var _ nodes.Typed = (*ImageQuantize)(nil)
