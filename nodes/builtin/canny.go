package builtin

import (
	"context"
	"fmt"
	"math"

	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// Canny is ComfyUI's Canny preprocessor (comfy_extras/nodes_canny.py), which runs
// kornia.filters.canny with its defaults besides the thresholds (5×5 Gaussian of σ 1,
// hysteresis on) and returns the edges as a 3-channel image. kornia is re-derived
// here from its documented algorithm (kornia/filters/canny.py):
//
//  1. an RGB image becomes grey: 0.299 R + 0.587 G + 0.114 B (rgb_to_grayscale);
//     other channel counts are processed channel by channel;
//  2. gaussian_blur2d: a separable 5-tap Gaussian, σ = 1, reflect border;
//  3. spatial_gradient (unnormalised 3×3 Sobel, replicate border): gx, gy;
//  4. magnitude √(gx² + gy² + 1e-6), direction atan2(gy, gx) rounded to 45°;
//  5. non-maximum suppression: a pixel stays when its magnitude is strictly above
//     both neighbours along the rounded direction (a neighbour outside the image
//     counts 0: kornia's zero-padded difference kernels);
//  6. weak edges above low_threshold, strong above high_threshold (strict);
//  7. hysteresis: weak pixels 8-connected through weak pixels to a strong one become
//     edges (kornia iterates a one-step dilation to its fixed point: the same set).
//
// kornia is not installed in the reference kit, so these steps are checked against
// hand-worked cases (canny_test.go), not against ComfyUI's output.
type Canny struct {
	Image         *Image  `input:"image"`
	LowThreshold  float64 `input:"low_threshold"`
	HighThreshold float64 `input:"high_threshold"`
}

// Schema implements nodes.Typed.
func (*Canny) Schema() graph.Schema {
	th := func(name string, def float64) graph.Input {
		return graph.Input{Name: name, Type: graph.TypeFloat, Default: def, Min: graph.Num(0.01), Max: graph.Num(0.99), Step: graph.Num(0.01)}
	}
	return graph.Schema{
		Name: "Canny", Category: "image/preprocessors", PythonModule: "comfy_extras.nodes_canny",
		Inputs:  []graph.Input{socketV3("image", "IMAGE"), th("low_threshold", 0.4), th("high_threshold", 0.8)},
		Outputs: outputs("IMAGE"),
		Extra:   v3Extra(1, nil),
	}
}

// Run implements nodes.Typed.
func (n *Canny) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	im := n.Image
	if n.LowThreshold > n.HighThreshold {
		// kornia's ValueError.
		return nodes.Result{}, fmt.Errorf("builtin: Canny: invalid input thresholds: low_threshold should be smaller than the high_threshold, got %v>%v", n.LowThreshold, n.HighThreshold)
	}
	if im.Height < 3 || im.Width < 3 {
		return nodes.Result{}, fmt.Errorf("builtin: Canny: a %dx%d image is too small for the 5×5 blur's reflect padding", im.Width, im.Height)
	}
	h, w := im.Height, im.Width
	planes := im.Channels
	if planes == 3 {
		planes = 1
	}
	out, err := NewImage(im.Batch, h, w, 3*planes)
	if err != nil {
		return nodes.Result{}, err
	}
	plane := make([]float32, h*w)
	for b := 0; b < im.Batch; b++ {
		if err := ctx.Err(); err != nil {
			return nodes.Result{}, err
		}
		px := im.Frame(b)
		for p := 0; p < planes; p++ {
			for i := range plane {
				if im.Channels == 3 {
					plane[i] = 0.299*px[i*3] + 0.587*px[i*3+1] + 0.114*px[i*3+2]
				} else {
					plane[i] = px[i*im.Channels+p]
				}
			}
			edges := cannyEdges(plane, h, w, float32(n.LowThreshold), float32(n.HighThreshold))
			// output[1].repeat(1, 3, 1, 1): the channel planes three times over.
			dst := out.Frame(b)
			for rep := 0; rep < 3; rep++ {
				c := rep*planes + p
				for i, v := range edges {
					dst[i*out.Channels+c] = v
				}
			}
		}
	}
	return nodes.One(out, nil)
}

// cannyEdges runs steps 2–7 on one h×w plane and returns 0/1 edges.
func cannyEdges(src []float32, h, w int, low, high float32) []float32 {
	blurred := gaussian5(src, h, w)
	mag := make([]float32, h*w)
	dir := make([]int, h*w)
	at := func(y, x int) float32 { // replicate border
		return blurred[min(max(y, 0), h-1)*w+min(max(x, 0), w-1)]
	}
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			gx := (at(y-1, x+1) - at(y-1, x-1)) + 2*(at(y, x+1)-at(y, x-1)) + (at(y+1, x+1) - at(y+1, x-1))
			gy := (at(y+1, x-1) - at(y-1, x-1)) + 2*(at(y+1, x)-at(y-1, x)) + (at(y+1, x+1) - at(y-1, x+1))
			mag[y*w+x] = float32(math.Sqrt(float64(gx*gx + gy*gy + 1e-6)))
			deg := float32(180 * math.Atan2(float64(gy), float64(gx)) / math.Pi)
			k := int(math.RoundToEven(float64(deg / 45)))
			dir[y*w+x] = ((k % 8) + 8) % 8
		}
	}
	// Neighbour offsets of kornia's eight NMS kernels, by rounded direction.
	offs := [8][2]int{{0, 1}, {1, 1}, {1, 0}, {1, -1}, {0, -1}, {-1, -1}, {-1, 0}, {-1, 1}}
	nb := func(y, x, k int) float32 {
		yy, xx := y+offs[k][0], x+offs[k][1]
		if yy < 0 || yy >= h || xx < 0 || xx >= w {
			return 0
		}
		return mag[yy*w+xx]
	}
	state := make([]uint8, h*w) // 0 none, 1 weak, 2 strong
	var stack []int
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			i := y*w + x
			m, k := mag[i], dir[i]
			if !(m > nb(y, x, k) && m > nb(y, x, (k+4)%8)) {
				continue
			}
			switch {
			case m > high:
				state[i] = 2
				stack = append(stack, i)
			case m > low:
				state[i] = 1
			}
		}
	}
	for len(stack) > 0 {
		i := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		y, x := i/w, i%w
		for dy := -1; dy <= 1; dy++ {
			for dx := -1; dx <= 1; dx++ {
				yy, xx := y+dy, x+dx
				if yy < 0 || yy >= h || xx < 0 || xx >= w {
					continue
				}
				if j := yy*w + xx; state[j] == 1 {
					state[j] = 2
					stack = append(stack, j)
				}
			}
		}
	}
	out := make([]float32, h*w)
	for i, s := range state {
		if s == 2 {
			out[i] = 1
		}
	}
	return out
}

// gaussian5 is gaussian_blur2d with kernel (5, 5) and σ (1, 1): the normalised taps
// exp(−x²/2) for x = −2…2, rows then columns, reflect border.
func gaussian5(src []float32, h, w int) []float32 {
	var k [5]float32
	var sum float32
	for i := range k {
		x := float64(i - 2)
		k[i] = float32(math.Exp(-x * x / 2))
		sum += k[i]
	}
	for i := range k {
		k[i] /= sum
	}
	tmp := make([]float32, h*w)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			var s float32
			for t := 0; t < 5; t++ {
				s += k[t] * src[y*w+reflectIndex(x+t-2, w)]
			}
			tmp[y*w+x] = s
		}
	}
	out := make([]float32, h*w)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			var s float32
			for t := 0; t < 5; t++ {
				s += k[t] * tmp[reflectIndex(y+t-2, h)*w+x]
			}
			out[y*w+x] = s
		}
	}
	return out
}

var _ nodes.Typed = (*Canny)(nil)
