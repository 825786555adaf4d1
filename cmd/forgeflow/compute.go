package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/forgeflow/forgeflow/gpu"
)

// The environment variables behind --bf16 and --gemm. The program reads them here, when
// a command registers its flags, and nowhere else: libraries get gpu.Options.
const (
	envBF16 = "FORGEFLOW_BF16"
	envGEMM = "FORGEFLOW_GEMM"
	envConv = "FORGEFLOW_CONV"
	envPack = "FORGEFLOW_PACK"
	// envBlocking is --gemm-blocking's variable.
	envBlocking = "FORGEFLOW_GEMM_BLOCKING"
)

// computeFlags are the tensor runtime's settings, shared by serve, run, validate and
// bench. An explicit flag wins over its environment variable.
type computeFlags struct {
	bf16 bf16Flag
	gemm string
	conv string
	pack string
	// blocking is --gemm-blocking: auto, derived or fixed ("": auto)
	blocking string
	envErr   error // an unusable FORGEFLOW_BF16, reported when the runtime is made
}

// bf16Flag is --bf16, checked as it is parsed.
type bf16Flag struct{ mode gpu.BF16Mode }

func (f *bf16Flag) String() string { return f.mode.String() }
func (f *bf16Flag) Set(s string) error {
	m, err := gpu.ParseBF16Mode(s)
	if err == nil {
		f.mode = m
	}
	return err
}

// register adds --bf16 and --gemm to fs with their defaults from getenv (os.Getenv in
// the program, a map in tests).
func (c *computeFlags) register(fs *flag.FlagSet, getenv func(string) string) {
	if v := getenv(envBF16); v != "" {
		if err := c.bf16.Set(v); err != nil {
			c.envErr = fmt.Errorf("%s=%s: %w", envBF16, v, err)
		}
	}
	c.gemm = getenv(envGEMM)
	fs.Func("bf16", "bfloat16 dot products for linear layers and convolutions: off, on, or auto to measure both once on this CPU (cached per CPU model) and use the faster (default "+c.bf16.String()+", from "+envBF16+" or off)", func(s string) error {
		c.envErr = nil
		return c.bf16.Set(s)
	})
	fs.StringVar(&c.gemm, "gemm", c.gemm, "force a GEMM kernel: generic, avx2 or avx512 (default auto, or "+envGEMM+")")
	c.conv, c.pack = getenv(envConv), getenv(envPack)
	fs.StringVar(&c.conv, "conv", c.conv, "convolution form: auto, direct (no Winograd) or winograd (every 3×3 stride-1 conv) (default auto, or "+envConv+")")
	fs.StringVar(&c.pack, "pack", c.pack, "keep weights packed for the GEMM after their first use: on or off (default on, or "+envPack+")")
	c.blocking = getenv(envBlocking)
	fs.StringVar(&c.blocking, "gemm-blocking", c.blocking, "GEMM cache blocking: auto (derived from the CPU's cache sizes, then a short calibration once per CPU model, cached), derived (no calibration) or fixed (the constants measured on the development machine) (default auto, or "+envBlocking+")")
}

// options returns the runtime options the flags ask for. BF16 auto and blocking auto
// keep their decisions in the user's cache folder (forgeflow/ under os.UserCacheDir); without one it
// measures in every process.
func (c *computeFlags) options(log *slog.Logger) (gpu.Options, error) {
	if c.envErr != nil {
		return gpu.Options{}, c.envErr
	}
	o := gpu.Options{Logger: log, BF16: c.bf16.mode, GEMM: c.gemm, Conv: c.conv, Blocking: c.blocking}
	switch o.Blocking {
	case "":
		o.Blocking = gpu.BlockingAuto
	case gpu.BlockingAuto, gpu.BlockingDerived, gpu.BlockingFixed:
	default:
		return gpu.Options{}, fmt.Errorf("gemm-blocking %q: want auto, derived or fixed", c.blocking)
	}
	switch c.pack {
	case "", "on":
	case "off":
		o.PackBudget = -1
	default:
		return gpu.Options{}, fmt.Errorf("pack %q: want on or off", c.pack)
	}
	if o.BF16 == gpu.BF16Auto || o.Blocking == gpu.BlockingAuto {
		if dir, err := os.UserCacheDir(); err == nil {
			o.CacheDir = filepath.Join(dir, "forgeflow")
		}
	}
	return o, nil
}
