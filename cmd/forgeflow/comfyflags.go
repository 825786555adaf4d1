package main

import (
	"flag"
	"fmt"
	"log/slog"
	"slices"
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

// comfyNoOps lists them, with the values of those whose values are a fixed set.
var comfyNoOps = []struct {
	name    string
	arity   noOpArity
	choices []string
}{
	{"auto-launch", noOpBool, nil},
	{"disable-auto-launch", noOpBool, nil},
	{"windows-standalone-build", noOpBool, nil},
	{"dont-print-server", noOpBool, nil},
	{"quick-test-for-ci", noOpBool, nil},
	{"log-stdout", noOpBool, nil},
	{"default-device", noOpValue, nil},
	{"cuda-malloc", noOpBool, nil},
	{"disable-cuda-malloc", noOpBool, nil},
	{"fp64-unet", noOpBool, nil},
	{"fp8_e8m0fnu-unet", noOpBool, nil},
	{"cpu-vae", noOpBool, nil},
	{"fp8_e4m3fn-text-enc", noOpBool, nil},
	{"fp8_e5m2-text-enc", noOpBool, nil},
	{"fp16-text-enc", noOpBool, nil},
	{"fp32-text-enc", noOpBool, nil},
	{"bf16-text-enc", noOpBool, nil},
	{"force-channels-last", noOpBool, nil},
	{"directml", noOpOptional, nil},
	{"oneapi-device-selector", noOpValue, nil},
	{"disable-ipex-optimize", noOpBool, nil},
	{"supports-fp8-compute", noOpBool, nil},
	{"preview-method", noOpValue, nil},
	{"preview-size", noOpValue, nil},
	{"use-split-cross-attention", noOpBool, nil},
	{"use-quad-cross-attention", noOpBool, nil},
	{"use-pytorch-cross-attention", noOpBool, nil},
	{"use-sage-attention", noOpBool, nil},
	{"use-flash-attention", noOpBool, nil},
	{"disable-xformers", noOpBool, nil},
	{"force-upcast-attention", noOpBool, nil},
	{"dont-upcast-attention", noOpBool, nil},
	{"async-offload", noOpBool, nil},
	{"force-non-blocking", noOpBool, nil},
	{"default-hashing-function", noOpValue, nil},
	{"disable-smart-memory", noOpBool, nil},
	{"deterministic", noOpBool, nil},
	{"fast", noOpAny, []string{"fp16_accumulation", "fp8_matrix_mult", "cublas_ops", "autotune"}},
	{"mmap-torch-files", noOpBool, nil},
	{"disable-mmap", noOpBool, nil},
	{"disable-all-custom-nodes", noOpBool, nil},
	{"whitelist-custom-nodes", noOpMany, nil},
	{"disable-api-nodes", noOpBool, nil},
	{"multi-user", noOpBool, nil},
	{"front-end-version", noOpValue, nil},
	{"comfy-api-base", noOpValue, nil},
	{"database-url", noOpValue, nil},
}

// noOpFlag is one of them; Set records that it was given.
type noOpFlag struct {
	name    string
	arity   noOpArity
	choices []string
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
		v := &noOpFlag{name: f.name, arity: f.arity, choices: f.choices, given: given}
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
