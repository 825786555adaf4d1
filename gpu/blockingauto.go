package gpu

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/forgeflow/forgeflow/gpu/internal/gemm"
)

// The values of Options.Blocking (and CPUOptions.Blocking).
const (
	// BlockingDerived sizes the GEMM's cache blocking from this CPU's cache sizes (the
	// default, also spelled "").
	BlockingDerived = "derived"
	// BlockingAuto starts from the derived blocking and times a few candidates around
	// it once per CPU model and build (cached in CacheDir), keeping one only where it
	// is clearly faster.
	BlockingAuto = "auto"
	// BlockingFixed uses the constants measured on the development machine (Zen 5),
	// for A/B runs against the derived or calibrated blocking.
	BlockingFixed = "fixed"
)

// blockingVersion changes whenever the blocking calibration's candidates, shapes or
// rules change, so that choices cached by an older one are measured again.
const blockingVersion = 1

// parseBlocking checks an Options.Blocking value: the gemm source it asks for and
// whether it asks for the calibration.
func parseBlocking(s string) (src gemm.BlockingSource, calibrate bool, err error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", BlockingDerived:
		return gemm.BlockingDerived, false, nil
	case BlockingAuto:
		return gemm.BlockingDerived, true, nil
	case BlockingFixed:
		return gemm.BlockingFixed, false, nil
	}
	return gemm.BlockingDerived, false, fmt.Errorf("gpu: gemm blocking %q: want auto, derived or fixed", s)
}

// blockingCalibration chooses the blocking of BlockingAuto for one Runtime.
type blockingCalibration struct {
	key  string // CPU model, code version, kernel path and threads
	file string // the cache file; "" keeps nothing
	run  func() (gemm.Calibration, error)
	log  *slog.Logger
}

// cachedBlocking is one entry of the cache file: the chosen blocking, the derived one
// and what each candidate measured.
type cachedBlocking struct {
	KC, MC, NC int
	Derived    [3]int   `json:"derived"`
	Candidates [][4]int `json:"candidates"` // kc, mc, nc, best run in µs
}

func newBlockingCalibration(opts gemm.Options, dir string, log *slog.Logger) *blockingCalibration {
	e, err := gemm.New(opts)
	path := "unavailable"
	if err == nil {
		path = e.Path().String()
	}
	c := &blockingCalibration{
		key: fmt.Sprintf("%s | %s | blocking %d, path %s, %d threads", cpuModel(), codeVersion(), blockingVersion, path, opts.Threads),
		run: func() (gemm.Calibration, error) { return gemm.Calibrate(opts) },
		log: log,
	}
	if dir != "" {
		c.file = filepath.Join(dir, "gemm-blocking.json")
	}
	return c
}

// decide returns the blocking to use: the cached choice for this key, else the one
// calibrated now (then cached). A failed calibration returns the zero Blocking, which
// keeps the derived one.
func (c *blockingCalibration) decide() gemm.Blocking {
	cache := map[string]cachedBlocking{}
	if c.file != "" {
		if err := readJSONFile(c.file, &cache); err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				c.log.Warn("gpu: gemm blocking: cache not read, measuring again", "file", c.file, "err", err)
			}
			cache = map[string]cachedBlocking{}
		}
	}
	if d, ok := cache[c.key]; ok && d.KC > 0 && d.MC > 0 && d.NC > 0 {
		c.log.Debug("gpu: gemm blocking: cached", "kc", d.KC, "mc", d.MC, "nc", d.NC, "key", c.key)
		return gemm.Blocking{KC: d.KC, MC: d.MC, NC: d.NC}
	}
	cal, err := c.run()
	if err != nil {
		c.log.Warn("gpu: gemm blocking: calibration failed, using the derived blocking", "err", err)
		return gemm.Blocking{}
	}
	d := cachedBlocking{KC: cal.Chosen.KC, MC: cal.Chosen.MC, NC: cal.Chosen.NC, Derived: [3]int{cal.Derived.KC, cal.Derived.MC, cal.Derived.NC}}
	for _, x := range cal.Candidates {
		d.Candidates = append(d.Candidates, [4]int{x.Blocking.KC, x.Blocking.MC, x.Blocking.NC, int(x.Best.Microseconds())})
	}
	c.log.Info("gpu: gemm blocking: calibrated", "kc", d.KC, "mc", d.MC, "nc", d.NC, "derived", d.Derived, "candidates", d.Candidates, "key", c.key)
	if c.file != "" {
		cache[c.key] = d
		if err := writeJSONFile(c.file, cache); err != nil {
			c.log.Warn("gpu: gemm blocking: choice not cached", "err", err)
		}
	}
	return cal.Chosen
}

// readJSONFile decodes the JSON file into v.
func readJSONFile(file string, v any) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// writeJSONFile writes v as indented JSON to file, through a temporary file renamed
// over it, so that a reader never sees half a file.
func writeJSONFile(file string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(file), "."+filepath.Base(file)+"-*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), file)
}
