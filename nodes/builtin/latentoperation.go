package builtin

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// LATENT_OPERATION nodes of comfy_extras/nodes_latent.py: LatentOperationSharpen and
// LatentOperationTonemapReinhard make an operation (an sd.LatentOperation);
// LatentApplyOperation runs one on a latent, LatentApplyOperationCFG on every sampling
// step's guidance (a pre-CFG model patch, sd.LatentOperationCFG).

func checkLatentOperation(op sd.LatentOperation) error {
	if op == nil {
		return errors.New("builtin: no latent operation")
	}
	return nil
}

// operationsSchema is the io.Schema shape of the experimental operation nodes.
func operationsSchema(name string, out string, in ...graph.Input) graph.Schema {
	extra := v3Extra(1, nil)
	extra["experimental"] = true
	return graph.Schema{
		Name: name, Category: "latent/advanced/operations", PythonModule: latentModule,
		Inputs: in, Outputs: outputs(out), Extra: extra,
	}
}

// LatentApplyOperation runs a latent operation on a latent's samples.
type LatentApplyOperation struct {
	Samples   *sd.Latent         `input:"samples"`
	Operation sd.LatentOperation `input:"operation"`
}

// Schema implements nodes.Typed.
func (*LatentApplyOperation) Schema() graph.Schema {
	return operationsSchema("LatentApplyOperation", "LATENT", socketV3("samples", "LATENT"), socketV3("operation", "LATENT_OPERATION"))
}

// Run implements nodes.Typed.
func (n *LatentApplyOperation) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	a, err := latentArray(n.Samples)
	if err != nil {
		return nodes.Result{}, err
	}
	out, err := n.Operation.Apply(ctx, a.data, a.s)
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: LatentApplyOperation: %w", err)
	}
	return nodes.One(newLatent(n.Samples, out, a.s))
}

// LatentApplyOperationCFG patches a model so that every step's guidance goes through the
// operation (set_model_sampler_pre_cfg_function).
type LatentApplyOperationCFG struct {
	Model     *sd.Model          `input:"model"`
	Operation sd.LatentOperation `input:"operation"`
}

// Schema implements nodes.Typed.
func (*LatentApplyOperationCFG) Schema() graph.Schema {
	return operationsSchema("LatentApplyOperationCFG", "MODEL", socketV3("model", "MODEL"), socketV3("operation", "LATENT_OPERATION"))
}

// Run implements nodes.Typed.
func (n *LatentApplyOperationCFG) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(n.Model.WithPreCFG(sd.LatentOperationCFG{Op: n.Operation}, false), nil)
}

// LatentOperationTonemapReinhard makes a Reinhard tone map of the latent's per-pixel
// magnitude (over channels), scaled to mean + 5·std of that magnitude times multiplier.
type LatentOperationTonemapReinhard struct {
	Multiplier float64 `input:"multiplier"`
}

// Schema implements nodes.Typed.
func (*LatentOperationTonemapReinhard) Schema() graph.Schema {
	return operationsSchema("LatentOperationTonemapReinhard", "LATENT_OPERATION",
		graph.Input{Name: "multiplier", Type: graph.TypeFloat, Default: 1.0, Min: graph.Num(0.0), Max: graph.Num(100.0), Step: graph.Num(0.01)})
}

// Run implements nodes.Typed.
func (n *LatentOperationTonemapReinhard) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(tonemapReinhard{multiplier: n.Multiplier}, nil)
}

type tonemapReinhard struct{ multiplier float64 }

// Apply is tonemap_reinhard: magnitude m = |latent|₂ over channels + 1e-10; per batch
// item top = (5·std(m) + mean(m))·multiplier (std with Bessel's correction, as
// torch.std); the result is latent/m · top·(m/top)/(m/top + 1).
func (t tonemapReinhard) Apply(ctx context.Context, data []float32, s [4]int) ([]float32, error) {
	mag := channelNorm(latentArr{data, s}, 1e-10).data // (N, H, W)
	hw := s[2] * s[3]
	mult := float32(t.multiplier)
	out := make([]float32, len(data))
	for b := 0; b < s[0]; b++ {
		m := mag[b*hw : (b+1)*hw]
		var sum float64
		for _, v := range m {
			sum += float64(v)
		}
		mean := sum / float64(hw)
		var ss float64
		for _, v := range m {
			d := float64(v) - mean
			ss += d * d
		}
		std := float32(math.Sqrt(ss / float64(hw-1))) // NaN for one value, as torch
		top := (std*5 + float32(mean)) * mult
		inv := 1 / top
		for i, mv := range m {
			scaled := mv * inv
			nm := scaled / (scaled + 1) * top
			for c := 0; c < s[1]; c++ {
				j := (b*s[1]+c)*hw + i
				out[j] = data[j] / mv * nm
			}
		}
	}
	return out, nil
}

// LatentOperationSharpen makes a sharpening of the latent's direction (the channel
// vector divided by its length): a gaussian unsharp kernel over a reflect-padded border,
// the length multiplied back.
type LatentOperationSharpen struct {
	SharpenRadius int     `input:"sharpen_radius"`
	Sigma         float64 `input:"sigma"`
	Alpha         float64 `input:"alpha"`
}

// Schema implements nodes.Typed.
func (*LatentOperationSharpen) Schema() graph.Schema {
	return operationsSchema("LatentOperationSharpen", "LATENT_OPERATION",
		graph.Input{Name: "sharpen_radius", Type: graph.TypeInt, Default: 9, Min: graph.Num(1), Max: graph.Num(31), Step: graph.Num(1)},
		graph.Input{Name: "sigma", Type: graph.TypeFloat, Default: 1.0, Min: graph.Num(0.1), Max: graph.Num(10.0), Step: graph.Num(0.1)},
		graph.Input{Name: "alpha", Type: graph.TypeFloat, Default: 0.1, Min: graph.Num(0.0), Max: graph.Num(5.0), Step: graph.Num(0.01)})
}

// Run implements nodes.Typed.
func (n *LatentOperationSharpen) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	return nodes.One(latentSharpen{radius: n.SharpenRadius, sigma: n.Sigma, alpha: n.Alpha}, nil)
}

type latentSharpen struct {
	radius       int
	sigma, alpha float64
}

// kernel is the (2r+1)² kernel of sharpen: nodes_post_processing.py gaussian_kernel (the
// outer product of its normalised 1-D factor, gaussian1D) times −10·alpha, the centre
// raised so that the kernel sums to 1.
func (p latentSharpen) kernel() []float32 {
	size := 2*p.radius + 1
	g := gaussian1D(size, p.sigma)
	k := make([]float32, size*size)
	scale := float32(p.alpha * -10)
	var sum float32
	for i := range size {
		for j := range size {
			k[i*size+j] = g[i] * g[j] * scale
			sum += k[i*size+j]
		}
	}
	c := p.radius*size + p.radius
	k[c] = k[c] - sum + 1
	return k
}

// Apply is sharpen: luminance l = |latent|₂ over channels + 1e-6, the direction
// latent/l convolved per channel with the kernel over a reflect padding of the radius
// (torch refuses a padding as large as the latent; so does this), times l.
func (p latentSharpen) Apply(ctx context.Context, data []float32, s [4]int) ([]float32, error) {
	r := p.radius
	h, w := s[2], s[3]
	if r >= h || r >= w {
		return nil, fmt.Errorf("builtin: LatentOperationSharpen: sharpen_radius %d needs a latent larger than %dx%d (reflect padding must be smaller than the latent)", r, w, h)
	}
	lum := channelNorm(latentArr{data, s}, 1e-6).data
	k := p.kernel()
	size := 2*r + 1
	hw := h * w
	out := make([]float32, len(data))
	dir := make([]float32, hw)
	for b := 0; b < s[0]; b++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		l := lum[b*hw : (b+1)*hw]
		for c := 0; c < s[1]; c++ {
			plane := data[(b*s[1]+c)*hw : (b*s[1]+c+1)*hw]
			for i, v := range plane {
				dir[i] = v / l[i]
			}
			dst := out[(b*s[1]+c)*hw : (b*s[1]+c+1)*hw]
			for y := 0; y < h; y++ {
				for x := 0; x < w; x++ {
					var acc float32
					for i := 0; i < size; i++ {
						row := reflectIndex(y+i-r, h) * w
						for j := 0; j < size; j++ {
							acc += k[i*size+j] * dir[row+reflectIndex(x+j-r, w)]
						}
					}
					dst[y*w+x] = l[y*w+x] * acc
				}
			}
		}
	}
	return out, nil
}

// Interface guards.
var (
	_ nodes.Typed        = (*LatentApplyOperation)(nil)
	_ nodes.Typed        = (*LatentApplyOperationCFG)(nil)
	_ nodes.Typed        = (*LatentOperationTonemapReinhard)(nil)
	_ nodes.Typed        = (*LatentOperationSharpen)(nil)
	_ sd.LatentOperation = tonemapReinhard{}
	_ sd.LatentOperation = latentSharpen{}
)
