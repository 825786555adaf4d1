package main

import (
	"flag"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
)

// ComfyUI flags (comfy/cli_args.py) that change nothing here: browser launching,
// PyTorch attention back ends and allocators, custom-node loading, front-end
// downloads. They are accepted, with their value shapes, so that a ComfyUI command line
// works unchanged, and the ones given are named in one warning.

// noOpArity is how many values a no-op flag takes (argparse's nargs).
type noOpArity uint8

const (
	noOpBool     noOpArity = iota // store_true
	noOpValue                     // one value
	noOpOptional                  // nargs="?"
	noOpMany                      // nargs="+"
	noOpAny                       // nargs="*"
)

// comfyNoOps lists them, with the values of those whose values are a fixed set, and
// numeric for those whose optional values are numbers (a following word that is not
// one is left for the next argument). The list covers ComfyUI 0.3.64 and the flags
// added since (the manager, assets, dynamic VRAM, compiler, feature flags).
var comfyNoOps = []struct {
	name    string
	arity   noOpArity
	choices []string
	numeric bool
}{
	{"auto-launch", noOpBool, nil, false},
	{"disable-auto-launch", noOpBool, nil, false},
	{"windows-standalone-build", noOpBool, nil, false},
	{"dont-print-server", noOpBool, nil, false},
	{"quick-test-for-ci", noOpBool, nil, false},
	{"default-device", noOpValue, nil, false},
	{"cuda-malloc", noOpBool, nil, false},
	{"disable-cuda-malloc", noOpBool, nil, false},
	{"fp64-unet", noOpBool, nil, false},
	{"fp8_e8m0fnu-unet", noOpBool, nil, false},
	{"cpu-vae", noOpBool, nil, false},
	{"fp8_e4m3fn-text-enc", noOpBool, nil, false},
	{"fp8_e5m2-text-enc", noOpBool, nil, false},
	{"fp16-text-enc", noOpBool, nil, false},
	{"fp32-text-enc", noOpBool, nil, false},
	{"bf16-text-enc", noOpBool, nil, false},
	{"fp16-intermediates", noOpBool, nil, false},
	{"force-channels-last", noOpBool, nil, false},
	{"directml", noOpOptional, nil, true},
	{"oneapi-device-selector", noOpValue, nil, false},
	{"disable-ipex-optimize", noOpBool, nil, false},
	{"supports-fp8-compute", noOpBool, nil, false},
	{"enable-triton-backend", noOpBool, nil, false},
	{"disable-triton-backend", noOpBool, nil, false},
	{"preview-method", noOpValue, nil, false},
	{"preview-size", noOpValue, nil, false},
	{"cache-ram", noOpAny, nil, true},
	{"high-ram", noOpBool, nil, false},
	{"use-split-cross-attention", noOpBool, nil, false},
	{"use-quad-cross-attention", noOpBool, nil, false},
	{"use-pytorch-cross-attention", noOpBool, nil, false},
	{"use-sage-attention", noOpBool, nil, false},
	{"use-flash-attention", noOpBool, nil, false},
	{"use-ck-attention", noOpBool, nil, false},
	{"disable-xformers", noOpBool, nil, false},
	{"force-upcast-attention", noOpBool, nil, false},
	{"dont-upcast-attention", noOpBool, nil, false},
	{"enable-manager", noOpBool, nil, false},
	{"disable-manager-ui", noOpBool, nil, false},
	{"enable-manager-legacy-ui", noOpBool, nil, false},
	{"vram-headroom", noOpValue, nil, false},
	{"disable-nvml-pressure", noOpBool, nil, false},
	{"async-offload", noOpOptional, nil, true},
	{"disable-async-offload", noOpBool, nil, false},
	{"disable-dynamic-vram", noOpBool, nil, false},
	{"enable-dynamic-vram", noOpBool, nil, false},
	{"fast-disk", noOpBool, nil, false},
	{"disable-fast-disk", noOpBool, nil, false},
	{"disable-cuda-graphs", noOpBool, nil, false},
	{"disable-comfy-compiler", noOpBool, nil, false},
	{"assert-graph-breaks", noOpBool, nil, false},
	{"force-non-blocking", noOpBool, nil, false},
	{"default-hashing-function", noOpValue, nil, false},
	{"disable-smart-memory", noOpBool, nil, false},
	{"deterministic", noOpBool, nil, false},
	{"fast", noOpAny, []string{"fp16_accumulation", "fp8_matrix_mult", "cublas_ops", "autotune"}, false},
	{"debug-hang", noOpBool, nil, false},
	{"disable-pinned-memory", noOpBool, nil, false},
	{"mmap-torch-files", noOpBool, nil, false},
	{"disable-mmap", noOpBool, nil, false},
	{"date-based-output", noOpBool, nil, false},
	{"date-output-format", noOpValue, nil, false},
	{"disable-all-custom-nodes", noOpBool, nil, false},
	{"whitelist-custom-nodes", noOpMany, nil, false},
	{"disabled-nodes-config", noOpValue, nil, false},
	{"disable-partner-nodes", noOpBool, nil, false},
	{"offline", noOpBool, nil, false},
	{"disable-api-nodes", noOpBool, nil, false},
	{"front-end-version", noOpValue, nil, false},
	{"comfy-api-base", noOpValue, nil, false},
	{"database-url", noOpValue, nil, false},
	{"disable-assets", noOpBool, nil, false},
	{"enable-assets", noOpBool, nil, false},
	{"enable-asset-hashing", noOpBool, nil, false},
	{"feature-flag", noOpValue, nil, false},
	{"list-feature-flags", noOpBool, nil, false},
}

// noOpFlag is one of them; Set records that it was given.
type noOpFlag struct {
	name    string
	arity   noOpArity
	choices []string
	numeric bool
	given   *[]string
}

func (n *noOpFlag) String() string { return "" }
func (n *noOpFlag) Set(string) error {
	if !slices.Contains(*n.given, "--"+n.name) {
		*n.given = append(*n.given, "--"+n.name)
	}
	return nil
}
func (n *noOpFlag) IsBoolFlag() bool { return n.arity == noOpBool }

// optionalNoOp and manyNoOp give the shapes of optional and several-valued ones to
// splitArgs (args.go).
type optionalNoOp struct{ *noOpFlag }

func (o optionalNoOp) IsBoolFlag() bool { return true }
func (o optionalNoOp) takes(next string) bool {
	if o.numeric {
		_, err := strconv.ParseFloat(next, 64)
		return err == nil
	}
	return o.choices == nil || slices.Contains(o.choices, next)
}

type manyNoOp struct{ *noOpFlag }

func (manyNoOp) multi() {}

// anyNoOp is nargs="*": optional, and each following word of its choices is one more
// value.
type anyNoOp struct{ optionalNoOp }

func (anyNoOp) multi() {}

// registerComfyNoOps adds the no-op flags to fs; the ones given are appended to given.
func registerComfyNoOps(fs *flag.FlagSet, given *[]string) {
	for _, f := range comfyNoOps {
		v := &noOpFlag{name: f.name, arity: f.arity, choices: f.choices, numeric: f.numeric, given: given}
		usage := "ComfyUI flag, accepted and ignored (no effect here)"
		switch f.arity {
		case noOpOptional:
			fs.Var(optionalNoOp{v}, f.name, usage)
		case noOpMany:
			fs.Var(manyNoOp{v}, f.name, usage)
		case noOpAny:
			fs.Var(anyNoOp{optionalNoOp{v}}, f.name, usage)
		default:
			fs.Var(v, f.name, usage)
		}
	}
}

// warnNoOps logs the ComfyUI flags given that change nothing here.
func warnNoOps(log *slog.Logger, given []string) {
	if len(given) > 0 {
		log.Warn("ComfyUI flags without effect in forgeflow, ignored", "flags", strings.Join(given, " "))
	}
}

// isNoOp reports whether a flag value is one of the no-op flags.
func isNoOp(v flag.Value) bool {
	switch v.(type) {
	case *noOpFlag, optionalNoOp, manyNoOp, anyNoOp:
		return true
	}
	return false
}

// printFlags lists fs's flags as flag.PrintDefaults does, without the no-op ComfyUI
// flags, which are named on one line at the end.
func printFlags(fs *flag.FlagSet) {
	shown := flag.NewFlagSet(fs.Name(), flag.ContinueOnError)
	shown.SetOutput(fs.Output())
	var noOps []string
	fs.VisitAll(func(f *flag.Flag) {
		if isNoOp(f.Value) {
			noOps = append(noOps, "--"+f.Name)
			return
		}
		shown.Var(f.Value, f.Name, f.Usage)
	})
	shown.PrintDefaults()
	if len(noOps) > 0 {
		fmt.Fprintf(fs.Output(), "\nComfyUI flags accepted without effect: %s\n", strings.Join(noOps, " "))
	}
}
