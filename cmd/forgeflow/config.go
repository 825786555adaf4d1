package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/forgeflow/forgeflow/cmd/forgeflow/internal/batch"
	"github.com/forgeflow/forgeflow/diffusion/lora"
	"github.com/forgeflow/forgeflow/executor"
	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/internal/imagesize"
	"github.com/forgeflow/forgeflow/nodes"
	"github.com/forgeflow/forgeflow/nodes/builtin"
	"github.com/forgeflow/forgeflow/weights/folders"
	"github.com/forgeflow/forgeflow/weights/memory"
)

// config holds ComfyUI's command-line flags that mean something here
// (comfy/cli_args.py), shared by serve and run.
type config struct {
	baseDir, outputDir, inputDir, tempDir, userDir string
	modelsDir                                      string
	extraModelPaths                                listFlag
	device                                         deviceFlags
	cacheClassic                                   bool
	cacheLRU                                       int
	cacheNone                                      bool
	cacheMinFreeMB                                 int
	disableMetadata                                bool
	followModelLinks                               bool
	loraMode                                       string
	verbose                                        optFlag // ComfyUI's logging level
	logStdout                                      bool
	compute                                        computeFlags
	maxImagePixels                                 int64
	// noOps are the ComfyUI flags given that change nothing here (comfyflags.go).
	noOps []string
}

func (c *config) register(fs *flag.FlagSet) {
	fs.StringVar(&c.baseDir, "base-directory", "", "base folder holding models/, input/, output/, temp/ and user/ (default: the working directory)")
	fs.StringVar(&c.outputDir, "output-directory", "", "output folder (default: BASE/output)")
	fs.StringVar(&c.inputDir, "input-directory", "", "input folder (default: BASE/input)")
	fs.StringVar(&c.tempDir, "temp-directory", "", "folder under which temp/ is made (default: BASE)")
	fs.StringVar(&c.userDir, "user-directory", "", "user data folder (default: BASE/user)")
	fs.StringVar(&c.modelsDir, "models-directory", "", "folder holding the model folders (default: BASE/models)")
	fs.Var(&c.extraModelPaths, "extra-model-paths-config", "extra_model_paths.yaml file (repeatable)")
	c.device.register(fs)
	fs.BoolVar(&c.cacheClassic, "cache-classic", false, "keep the outputs of the last prompt's nodes (the default)")
	fs.IntVar(&c.cacheLRU, "cache-lru", 0, "keep up to N node outputs, least recently used evicted first")
	fs.IntVar(&c.cacheMinFreeMB, "cache-min-free-ram", 1024, "evict cached node outputs while available RAM is below this many MB (0: never)")
	fs.BoolVar(&c.cacheNone, "cache-none", false, "keep no node outputs between prompts")
	fs.BoolVar(&c.disableMetadata, "disable-metadata", false, "do not embed the prompt and workflow in saved files")
	fs.BoolVar(&c.followModelLinks, "follow-model-links", true, "list and load model files through symbolic links that point outside the model folders, as ComfyUI does (a shared model drive); =false confines them")
	fs.StringVar(&c.loraMode, "lora-mode", "auto", "how LoRAs patch a model: auto (merge float weights into copies, patch quantized ones at run time), merge or runtime")
	c.verbose = optFlag{val: "INFO", bare: "DEBUG", choices: []string{"DEBUG", "DETAIL", "INFO", "WARNING", "ERROR", "CRITICAL"}}
	fs.Var(&c.verbose, "verbose", "logging level: DEBUG, DETAIL, INFO, WARNING, ERROR or CRITICAL; alone it means DEBUG")
	fs.BoolVar(&c.logStdout, "log-stdout", false, "write log lines below ERROR to stdout (errors stay on stderr); by default all go to stderr")
	c.compute.register(fs, os.Getenv)
	fs.Int64Var(&c.maxImagePixels, "max-image-pixels", imagesize.DefaultMaxPixels, "largest image (width × height) decoded from a file or upload; bigger ones are refused from their header")
	registerComfyNoOps(fs, &c.noOps)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage of forgeflow %s:\n", fs.Name())
		printFlags(fs)
	}
}

// dirs resolves the folders as ComfyUI's folder_paths does: everything under the base
// directory unless given, and the temp folder a "temp" child of --temp-directory. It
// returns the nodes' folders, the user folder and the base directory.
func (c *config) dirs() (d nodes.Dirs, user, base string, err error) {
	base = c.baseDir
	if base == "" {
		if base, err = os.Getwd(); err != nil {
			return d, "", "", err
		}
	}
	if base, err = filepath.Abs(base); err != nil {
		return d, "", "", err
	}
	pick := func(given, def string) (string, error) {
		if given == "" {
			return def, nil
		}
		return filepath.Abs(given)
	}
	if d.Output, err = pick(c.outputDir, filepath.Join(base, "output")); err != nil {
		return d, "", "", err
	}
	if d.Input, err = pick(c.inputDir, filepath.Join(base, "input")); err != nil {
		return d, "", "", err
	}
	tempParent, err := pick(c.tempDir, base)
	if err != nil {
		return d, "", "", err
	}
	d.Temp = filepath.Join(tempParent, "temp")
	if user, err = pick(c.userDir, filepath.Join(base, "user")); err != nil {
		return d, "", "", err
	}
	return d, user, base, nil
}

// cacheOptions maps the cache flags (mutually exclusive, as in ComfyUI) to the
// executor's options. Eviction under RAM pressure reads available memory from mem.
func (c *config) cacheOptions(mem *memory.Manager) (executor.CacheOptions, error) {
	n := 0
	for _, set := range []bool{c.cacheClassic, c.cacheLRU != 0, c.cacheNone} {
		if set {
			n++
		}
	}
	if n > 1 {
		return executor.CacheOptions{}, fmt.Errorf("--cache-classic, --cache-lru and --cache-none exclude each other")
	}
	if c.cacheLRU < 0 || c.cacheMinFreeMB < 0 {
		return executor.CacheOptions{}, fmt.Errorf("--cache-lru and --cache-min-free-ram must not be negative")
	}
	var o executor.CacheOptions
	switch {
	case c.cacheNone:
		return executor.CacheOptions{Mode: executor.CacheNone}, nil
	case c.cacheLRU > 0:
		o = executor.CacheOptions{Mode: executor.CacheLRU, LRUSize: c.cacheLRU}
	default:
		o = executor.CacheOptions{Mode: executor.CacheClassic}
	}
	if c.cacheMinFreeMB > 0 && mem != nil {
		o.MinFreeRAM = uint64(c.cacheMinFreeMB) << 20
		o.AvailableRAM = func() (uint64, error) {
			s := mem.Stats()
			if s.RAMFree <= 0 {
				return 0, errors.New("available RAM unknown")
			}
			return uint64(s.RAMFree), nil
		}
	}
	return o, nil
}

// logger writes to stderr at the --verbose level; with --log-stdout, as ComfyUI's
// app/logger.py, lines below ERROR go to stdout instead.
func (c *config) logger(stdout, stderr io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.logLevel()}
	errs := slog.NewTextHandler(stderr, opts)
	if !c.logStdout {
		return slog.New(errs)
	}
	return slog.New(splitHandler{low: slog.NewTextHandler(stdout, opts), high: errs})
}

// splitHandler sends records below ERROR to low and the others to high.
type splitHandler struct{ low, high slog.Handler }

func (h splitHandler) pick(l slog.Level) slog.Handler {
	if l < slog.LevelError {
		return h.low
	}
	return h.high
}

func (h splitHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.pick(l).Enabled(ctx, l)
}

func (h splitHandler) Handle(ctx context.Context, r slog.Record) error {
	return h.pick(r.Level).Handle(ctx, r)
}

func (h splitHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return splitHandler{low: h.low.WithAttrs(attrs), high: h.high.WithAttrs(attrs)}
}

func (h splitHandler) WithGroup(name string) slog.Handler {
	return splitHandler{low: h.low.WithGroup(name), high: h.high.WithGroup(name)}
}

// logLevel maps ComfyUI's --verbose level to slog's (CRITICAL is ERROR: slog has no
// higher level of its own; DETAIL, ComfyUI's level between DEBUG and INFO, is too).
func (c *config) logLevel() slog.Level {
	switch c.verbose.val {
	case "DEBUG":
		return slog.LevelDebug
	case "DETAIL":
		return (slog.LevelDebug + slog.LevelInfo) / 2
	case "WARNING":
		return slog.LevelWarn
	case "ERROR", "CRITICAL":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// env is what serve and run build from a config.
type env struct {
	dirs     nodes.Dirs // output, input and temp
	userDir  string
	base     string
	registry *nodes.Registry
	models   *folders.Paths
	// mem is the one memory manager: the loader nodes cache models in it, the server's
	// /system_stats and /free read and act on it, the executor's RAM-pressure eviction
	// asks it.
	mem *memory.Manager
	// closeDevice releases the compute device (a no-op on the CPU).
	closeDevice func() error
	// foreign are another server's node schemas (--object-info), nil without;
	// validateForeign checks prompts against them (validate) instead of only
	// converting with them (run).
	foreign         graph.Schemas
	validateForeign bool
}

// env builds the folders, the memory manager, the tensor runtime and the node registry.
// log may be nil: the commands that pass none (nodes, models, convert) run no model, so
// no device is opened for them and their runtime is the CPU's.
func (c *config) env(log *slog.Logger) (*env, error) {
	d, user, base, err := c.dirs()
	if err != nil {
		return nil, err
	}
	if c.modelsDir != "" {
		// As ComfyUI checks it: a mistyped path would otherwise leave every list empty.
		if fi, err := os.Stat(c.modelsDir); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("--models-directory %s: not a directory", c.modelsDir)
		}
	}
	models, err := folders.New(folders.Options{BaseDir: base, ModelsDir: c.modelsDir, ExtraConfigs: c.extraModelPaths, ConfineLinks: !c.followModelLinks})
	if err != nil {
		return nil, err
	}
	devOpts, err := c.device.options()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
		devOpts.CUDA = false
	}
	loraMode, err := lora.ParseMode(c.loraMode)
	if err != nil {
		return nil, err
	}
	mem := memory.New(memory.Options{Logger: log})
	ropts, err := c.compute.options(log)
	if err != nil {
		return nil, err
	}
	rt, closeDevice, err := devOpts.runtime(ropts, mem)
	if err != nil {
		return nil, err
	}
	reg := nodes.NewRegistry()
	if err := builtin.Register(reg, builtin.Options{Dirs: d, Models: models, Memory: mem, Runtime: rt, LoRAMode: loraMode}); err != nil {
		closeDevice()
		return nil, err
	}
	return &env{dirs: d, userDir: user, base: base, registry: reg, models: models, mem: mem, closeDevice: closeDevice}, nil
}

// batchEnv is what run and validate need of the environment.
func (e *env) batchEnv() batch.Env {
	return batch.Env{Registry: e.registry, Dirs: e.dirs, Schemas: e.foreign, ValidateWithSchemas: e.validateForeign}
}
