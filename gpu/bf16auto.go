package gpu

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"github.com/forgeflow/forgeflow/gpu/internal/gemm"
)

// BF16Mode chooses bfloat16 compute for the cpu backend (Options.BF16).
type BF16Mode uint8

const (
	// BF16Off keeps Linear and Conv2D in float32 (the zero value).
	BF16Off BF16Mode = iota
	// BF16On uses AVX512_BF16 dot products where the CPU has them.
	BF16On
	// BF16Auto measures both paths once on this CPU and uses bfloat16 only where it is
	// faster: on some x86 CPUs VDPBF16PS is slower than float32 FMA.
	BF16Auto
)

func (m BF16Mode) String() string {
	switch m {
	case BF16Off:
		return "off"
	case BF16On:
		return "on"
	case BF16Auto:
		return "auto"
	}
	return fmt.Sprintf("BF16Mode(%d)", int(m))
}

// ParseBF16Mode parses "off", "on" or "auto" (case-insensitive). The spellings
// FORGEFLOW_BF16 has accepted keep their meaning: "", "0" and "false" are off, "1",
// "true" and "yes" on.
func ParseBF16Mode(s string) (BF16Mode, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "off", "0", "false", "no":
		return BF16Off, nil
	case "on", "1", "true", "yes":
		return BF16On, nil
	case "auto":
		return BF16Auto, nil
	}
	return BF16Off, fmt.Errorf("gpu: bf16 %q: want auto, on or off", s)
}

// calibrationVersion changes whenever the calibration's shapes or rules change, so that
// decisions cached by an older one are measured again.
const calibrationVersion = 1

// calibrationRounds: each path runs once to warm up, then this many times alternately;
// each path's fastest run counts, which other load on the machine can only slow down.
const calibrationRounds = 3

// calibration decides BF16Auto for one Runtime.
type calibration struct {
	key     string // CPU model and code version
	file    string // the cache file; "" keeps nothing
	measure func(bf16 bool) (time.Duration, error)
	log     *slog.Logger
}

// cachedDecision is one entry of the cache file.
type cachedDecision struct {
	BF16   bool  `json:"bf16"`
	FP32NS int64 `json:"fp32_ns"`
	BF16NS int64 `json:"bf16_ns"`
}

func newCalibration(mm *matmuler, dir string, log *slog.Logger) *calibration {
	c := &calibration{key: cpuModel() + " | " + codeVersion(), measure: mm.calibrationRun(), log: log}
	if dir != "" {
		c.file = filepath.Join(dir, "bf16-calibration.json")
	}
	return c
}

// decide returns whether to compute in bfloat16: the cached decision for this CPU and
// code version, else the faster path measured now (then cached). A failed measurement
// keeps float32.
func (c *calibration) decide() bool {
	cache := c.load()
	if d, ok := cache[c.key]; ok {
		c.log.Debug("gpu: bf16 auto: cached decision", "bf16", d.BF16, "cpu", c.key)
		return d.BF16
	}
	fp32, bf16, err := c.time()
	if err != nil {
		c.log.Warn("gpu: bf16 auto: calibration failed, using float32", "err", err)
		return false
	}
	d := cachedDecision{BF16: bf16 < fp32, FP32NS: fp32.Nanoseconds(), BF16NS: bf16.Nanoseconds()}
	c.log.Info("gpu: bf16 auto: calibrated", "bf16", d.BF16, "fp32_ms", fp32.Seconds()*1e3, "bf16_ms", bf16.Seconds()*1e3, "cpu", c.key)
	if c.file != "" {
		if cache == nil {
			cache = map[string]cachedDecision{}
		}
		cache[c.key] = d
		if err := c.store(cache); err != nil {
			c.log.Warn("gpu: bf16 auto: decision not cached", "err", err)
		}
	}
	return d.BF16
}

// time runs the calibration: a warm-up of each path, then calibrationRounds runs of
// each alternately, returning each path's fastest.
func (c *calibration) time() (fp32, bf16 time.Duration, err error) {
	best := [2]time.Duration{}
	for round := 0; round <= calibrationRounds; round++ {
		for i, useBF16 := range []bool{false, true} {
			d, err := c.measure(useBF16)
			if err != nil {
				return 0, 0, err
			}
			if round > 0 && (round == 1 || d < best[i]) {
				best[i] = d
			}
		}
	}
	return best[0], best[1], nil
}

// load reads the cache file; a missing or unreadable file is an empty cache (a corrupt
// one is measured again and overwritten).
func (c *calibration) load() map[string]cachedDecision {
	if c.file == "" {
		return nil
	}
	b, err := os.ReadFile(c.file)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			c.log.Warn("gpu: bf16 auto: cache not read", "err", err)
		}
		return nil
	}
	var m map[string]cachedDecision
	if err := json.Unmarshal(b, &m); err != nil {
		c.log.Warn("gpu: bf16 auto: cache file corrupt, measuring again", "file", c.file, "err", err)
		return nil
	}
	return m
}

// store writes the cache file whole (writeJSONFile: a reader never sees half a file).
func (c *calibration) store(m map[string]cachedDecision) error {
	return writeJSONFile(c.file, m)
}

// calibrationShapes are Linear products of an SD1.5 UNet at 512²: the 64×64 level's
// feed-forward input (4096 tokens, 320 → 1280) and the 32×32 level's projections
// (1024 tokens, 640 → 640), with F16 weights as checkpoints store them. About 4.2 GFLOP
// per run: tens of milliseconds.
var calibrationShapes = []struct{ m, k, n int }{{4096, 320, 1280}, {1024, 640, 640}}

// calibrationRun returns the measurement BF16Auto times: the calibration shapes on the
// all-thread float32 or bfloat16 engine, with fixed pseudo-random data made once.
func (m *matmuler) calibrationRun() func(bf16 bool) (time.Duration, error) {
	type operands struct {
		x, y []float32
		w    []byte
	}
	ops := make([]operands, len(calibrationShapes))
	seed := uint32(1)
	next := func() float32 { // xorshift: any spread of values will do
		seed ^= seed << 13
		seed ^= seed >> 17
		seed ^= seed << 5
		return float32(seed)/(1<<32) - 0.5
	}
	for i, s := range calibrationShapes {
		o := &ops[i]
		o.x, o.y = make([]float32, s.m*s.k), make([]float32, s.m*s.n)
		for j := range o.x {
			o.x[j] = next()
		}
		w := make([]float32, s.n*s.k)
		for j := range w {
			w[j] = next() * 0.1
		}
		o.w = make([]byte, 2*len(w))
		_ = EncodeFloat32(F16, o.w, w)
	}
	return func(bf16 bool) (time.Duration, error) {
		e := m.wide
		if bf16 {
			e = m.bf16
		}
		if e == nil {
			return 0, errors.New("no bfloat16 engine")
		}
		start := time.Now()
		for i, s := range calibrationShapes {
			o := ops[i]
			if err := e.Linear(s.m, o.x, s.k, gemm.Weight{DType: gemm.F16, N: s.n, K: s.k, Data: o.w}, o.y, s.n, false); err != nil {
				return 0, err
			}
		}
		return time.Since(start), nil
	}
}

// cpuModel names the CPU: /proc/cpuinfo's "model name" on Linux, else the
// architecture alone (the decision is then shared by every CPU of it).
func cpuModel() string {
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), ":")
			if ok && strings.TrimSpace(k) == "model name" {
				return strings.TrimSpace(v) + " (" + runtime.GOARCH + ")"
			}
		}
	}
	return "unknown CPU (" + runtime.GOARCH + ")"
}

// codeVersion names the build: the main module's version and VCS revision (with
// "+dirty" for a modified tree), the Go version and the calibration's own version. A
// new build of the kernels thus measures again.
func codeVersion() string {
	v := fmt.Sprintf("calibration %d, %s", calibrationVersion, runtime.Version())
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	v = bi.Main.Path + " " + bi.Main.Version + ", " + v
	for _, s := range bi.Settings {
		switch {
		case s.Key == "vcs.revision":
			v += ", " + s.Value
		case s.Key == "vcs.modified" && s.Value == "true":
			v += "+dirty"
		}
	}
	return v
}
