package cuda

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"regexp"
	"slices"

	"github.com/forgeflow/forgeflow/gpu"
)

//go:embed kernels/*.cu kernels/common.cuh
var kernelFS embed.FS

// A module is one kernel file compiled as a unit (common.cuh prepended). Modules are
// compiled on first use, so an op family whose module fails to build falls back to the
// CPU while the others run on the device.
type module string

const (
	modElementwise module = "elementwise"
	modNorm        module = "norm"
	modGEMM        module = "gemm"
	modAttention   module = "attention"
	modMisc        module = "misc"
)

var modules = []module{modElementwise, modNorm, modGEMM, modAttention, modMisc}

// kernelRef names a kernel: its module and its extern "C" symbol.
type kernelRef struct {
	mod  module
	name string
}

// opKernels maps every op of the closed list to the kernels that run it on the device.
// An op absent here (or with no kernel for the operands' dtypes, see supports) runs on
// the CPU through the gpu.Runtime's fallback; cpuOnly says why, and TestOpKernels checks
// that every op is in exactly one of the two tables.
var opKernels = map[gpu.Op][]kernelRef{
	gpu.OpCopy:      {{modElementwise, "ff_copy"}},
	gpu.OpCast:      {{modElementwise, "ff_cast"}},
	gpu.OpMatMul:    {{modGEMM, "ff_matmul"}},
	gpu.OpLinear:    {{modGEMM, "ff_linear"}},
	gpu.OpConv2D:    {{modGEMM, "ff_conv2d"}},
	gpu.OpGroupNorm: {{modNorm, "ff_group_norm"}},
	gpu.OpLayerNorm: {{modNorm, "ff_layer_norm"}},
	gpu.OpRMSNorm:   {{modNorm, "ff_rms_norm"}},
	gpu.OpSoftmax:   {{modNorm, "ff_softmax"}},
	gpu.OpAttention: {{modAttention, "ff_attention_64"}, {modAttention, "ff_attention_80"},
		{modAttention, "ff_attention_128"}, {modAttention, "ff_attention_160"}},
	gpu.OpGELU:              {{modElementwise, "ff_unary"}},
	gpu.OpGELUTanh:          {{modElementwise, "ff_unary"}},
	gpu.OpQuickGELU:         {{modElementwise, "ff_unary"}},
	gpu.OpSiLU:              {{modElementwise, "ff_unary"}},
	gpu.OpAdd:               {{modElementwise, "ff_binary"}},
	gpu.OpSub:               {{modElementwise, "ff_binary"}},
	gpu.OpMul:               {{modElementwise, "ff_binary"}},
	gpu.OpDiv:               {{modElementwise, "ff_binary"}},
	gpu.OpConcat:            {{modElementwise, "ff_concat_part"}},
	gpu.OpRoPE:              {{modMisc, "ff_rope"}},
	gpu.OpTimestepEmbedding: {{modMisc, "ff_timestep"}},
	gpu.OpPatchify:          {{modMisc, "ff_patchify"}},
	gpu.OpUnpatchify:        {{modMisc, "ff_patchify"}},
	gpu.OpUpscale:           {{modMisc, "ff_gather2d"}},
	gpu.OpEmbedding:         {{modMisc, "ff_embedding"}},
}

// cpuOnly lists the ops (or op variants) that the device declines on purpose, with the
// reason; the gpu.Runtime runs them on the CPU and logs it once.
var cpuOnly = map[gpu.Op]string{
	gpu.OpLeakyReLU: "added for the upscale models (issue 11) without a device kernel yet; elementwise, so staging costs a copy each way",
	gpu.OpSigmoid:   "added for the upscale models (issue 11) without a device kernel yet; elementwise, so staging costs a copy each way",
}

// partialOps says which ops have a kernel for some operands only; the rest fall back.
var partialOps = map[gpu.Op]string{
	gpu.OpUpscale:   "nearest and nearest-exact without crop on the device; bilinear, bicubic, area, bislerp, lanczos and center crop on the CPU",
	gpu.OpAttention: "head dims up to 160 on the device (SD1.5 40/80/160, SDXL 64, Flux 128); wider heads on the CPU",
}

// moduleSource returns the CUDA C source of m: common.cuh followed by m's file.
func moduleSource(m module) (string, error) {
	common, err := kernelFS.ReadFile("kernels/common.cuh")
	if err != nil {
		return "", err
	}
	body, err := kernelFS.ReadFile("kernels/" + string(m) + ".cu")
	if err != nil {
		return "", fmt.Errorf("cuda: kernel module %s: %w", m, err)
	}
	return string(common) + "\n#line 1 \"" + string(m) + ".cu\"\n" + string(body), nil
}

// sourceHash is the hex SHA-256 of a module's source, part of its cache key.
func sourceHash(src string) string {
	h := sha256.Sum256([]byte(src))
	return hex.EncodeToString(h[:])
}

var kernelDecl = regexp.MustCompile(`extern "C" __global__ void (?:__launch_bounds__\([^)]*\) )?(ff_[a-z0-9_]+)\(`)

// declaredKernels lists the extern "C" kernels a module's source defines.
func declaredKernels(src string) []string {
	var out []string
	for _, m := range kernelDecl.FindAllStringSubmatch(src, -1) {
		out = append(out, m[1])
	}
	slices.Sort(out)
	return out
}
