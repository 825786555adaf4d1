package gpu

import "fmt"

// Op names one operation of the closed op list that every backend implements (or
// declines through Supports). Adding an op means: a constant before OpCount, its name in
// opNames, a cpu kernel, and a case in the cross-backend test table; TestOpTable fails
// until all four exist.
type Op int

const (
	OpCopy              Op = iota // strided → contiguous copy of the same dtype
	OpCast                        // plain float dtype → another plain float dtype
	OpMatMul                      // batched C = A·B (F32), broadcasting batch dims
	OpLinear                      // y = x·Wᵀ + b, W in its stored dtype
	OpConv2D                      // NCHW conv, 1×1 and k×k, stride, padding, bias (implicit GEMM)
	OpGroupNorm                   // per-sample group norm over (C/G, H, W) with affine
	OpLayerNorm                   // over the last dim, optional affine
	OpRMSNorm                     // over the last dim, optional weight
	OpSoftmax                     // over the last dim
	OpAttention                   // scaled dot-product attention, tiled with online softmax
	OpGELU                        // x·Φ(x) (erf form)
	OpGELUTanh                    // tanh approximation of GELU
	OpQuickGELU                   // x·σ(1.702x)
	OpSiLU                        // x·σ(x)
	OpAdd                         // a + b with broadcasting
	OpSub                         // a − b with broadcasting
	OpMul                         // a · b with broadcasting
	OpDiv                         // a / b with broadcasting
	OpConcat                      // concatenation along one dim
	OpRoPE                        // Flux rotary embedding: x rotated by a (…, D/2, 2, 2) table
	OpTimestepEmbedding           // sinusoidal embedding of timesteps (cos half, sin half)
	OpPatchify                    // (B, C, H, W) → (B, H/p·W/p, C·p·p)
	OpUnpatchify                  // inverse of OpPatchify
	OpUpscale                     // comfy.utils.common_upscale (see gpu/resample)
	OpEmbedding                   // rows of a (V, D) table in its stored dtype (float or GGUF blocks), by id
	OpLeakyReLU                   // x ≥ 0 ? x : a·x, one slope (LeakyReLU) or one per dim-1 channel (PReLU)
	OpSigmoid                     // 1 / (1 + e^−x)
	OpCount
)

var opNames = [OpCount]string{
	OpCopy:              "copy",
	OpCast:              "cast",
	OpMatMul:            "matmul",
	OpLinear:            "linear",
	OpConv2D:            "conv2d",
	OpGroupNorm:         "group_norm",
	OpLayerNorm:         "layer_norm",
	OpRMSNorm:           "rms_norm",
	OpSoftmax:           "softmax",
	OpAttention:         "attention",
	OpGELU:              "gelu",
	OpGELUTanh:          "gelu_tanh",
	OpQuickGELU:         "quick_gelu",
	OpSiLU:              "silu",
	OpAdd:               "add",
	OpSub:               "sub",
	OpMul:               "mul",
	OpDiv:               "div",
	OpConcat:            "concat",
	OpRoPE:              "rope",
	OpTimestepEmbedding: "timestep_embedding",
	OpPatchify:          "patchify",
	OpUnpatchify:        "unpatchify",
	OpUpscale:           "upscale",
	OpEmbedding:         "embedding",
	OpLeakyReLU:         "leaky_relu",
	OpSigmoid:           "sigmoid",
}

func (o Op) String() string {
	if o >= 0 && o < OpCount && opNames[o] != "" {
		return opNames[o]
	}
	return fmt.Sprintf("Op(%d)", int(o))
}

// Call is one op invocation as a backend receives it: the inputs (nil for an absent
// optional input), the preallocated output and the op's parameters (a pointer to one of
// the *Params types below, or nil). The Runtime recycles its Calls, and the parameters
// live inside the Call, so a backend reads them during Run and keeps no reference.
type Call struct {
	In     []*Tensor
	Out    *Tensor
	Params any

	// storage of a recycled call (headers.go): In and Params point here
	in     [4]*Tensor
	inBuf  []*Tensor
	params callParams
	dts    [8]DType
}

// callParams holds a Call's parameters in place, one field per parameter type, so that
// Params can point at them without a heap object per op.
type callParams struct {
	conv      ConvParams
	norm      NormParams
	attention AttentionParams
	concat    ConcatParams
	timestep  TimestepParams
	patch     PatchParams
	upscale   UpscaleParams
	embedding EmbeddingParams
	leaky     LeakyParams
}

// ConvParams configures OpConv2D: the stride (both axes) and zero padding per side.
type ConvParams struct {
	Stride                   int
	Top, Bottom, Left, Right int
}

// NormParams configures the norms; Groups is used by OpGroupNorm only.
type NormParams struct {
	Groups int
	Eps    float64
	// silu asks the cpu group norm to apply SiLU to its result in the same pass
	// (GroupNormSiLU; set only when the cpu backend runs the op).
	silu bool
}

// AttentionParams configures OpAttention. Scale multiplies q·k (0 means 1/√D); Causal
// masks key positions after the query position (aligned at the end, as PyTorch's
// is_causal does for Lq == Lk).
type AttentionParams struct {
	Scale  float64
	Causal bool
}

// ConcatParams configures OpConcat.
type ConcatParams struct{ Dim int }

// TimestepParams configures OpTimestepEmbedding: out[i] = [cos(s·t·f_j), sin(s·t·f_j)]
// with f_j = exp(−ln(MaxPeriod)·j/half), j < half = Dim/2, zero-padded for odd Dim.
type TimestepParams struct {
	Dim       int
	MaxPeriod float64
	Scale     float64
}

// PatchParams configures OpPatchify and OpUnpatchify (P is the patch edge; H and W are
// the image height and width in pixels, needed by OpUnpatchify).
type PatchParams struct{ P, H, W int }

// UpscaleParams configures OpUpscale (ComfyUI's argument names).
type UpscaleParams struct {
	Width, Height int
	Method, Crop  string
}

// EmbeddingParams configures OpEmbedding: the row ids to gather.
type EmbeddingParams struct{ IDs []int }
