package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/forgeflow/forgeflow/cmd/forgeflow/internal/batch"
	"github.com/forgeflow/forgeflow/executor"
)

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cfg config
	var opts batch.RunOptions
	fl := flag.NewFlagSet("run", flag.ContinueOnError)
	fl.SetOutput(stderr)
	cfg.register(fl)
	fl.BoolVar(&opts.ContinueOnError, "continue-on-error", false, "run the remaining workflows after one fails")
	fl.BoolVar(&opts.Plain, "plain", false, "print progress as plain lines even on a terminal")
	fl.BoolVar(&opts.JSON, "json", false, "print the summary as JSON on stdout (progress goes to stderr)")
	queueURL := fl.String("queue", "", "submit to a NATS JetStream cluster and follow the prompts there: nats://h1:4222,...")
	objectInfo := fl.String("object-info", "", "convert UI workflows with "+objectInfoUsage)
	if code, ok := parseFlags(fl, args); !ok {
		return code
	}
	if fl.NArg() == 0 {
		fmt.Fprintln(stderr, "forgeflow run: no workflow files given")
		return exitUsage
	}
	files, err := batch.ExpandPaths(fl.Args())
	if err != nil {
		fmt.Fprintln(stderr, "forgeflow run:", err)
		return exitUsage
	}
	// Node logs would tear the progress bars; only warnings reach stderr.
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: max(slog.LevelWarn, cfg.logLevel())}))
	warnNoOps(log, cfg.noOps)
	e, err := cfg.env(log)
	if err != nil {
		fmt.Fprintln(stderr, "forgeflow run:", err)
		return exitFailed
	}
	defer e.closeDevice()
	if *objectInfo != "" {
		if e.foreign, err = loadObjectInfo(ctx, *objectInfo); err != nil {
			fmt.Fprintln(stderr, "forgeflow run:", err)
			return exitFailed
		}
	}
	cache, err := cfg.cacheOptions(e.mem)
	if err != nil {
		fmt.Fprintln(stderr, "forgeflow run:", err)
		return exitUsage
	}
	if *queueURL != "" {
		return runQueued(ctx, &cfg, e, *queueURL, files, opts, log, stdout, stderr)
	}
	eng, err := executor.New(executor.Options{Registry: e.registry, Dirs: e.dirs, Logger: log, Cache: cache, DisableMetadata: cfg.disableMetadata, MaxImagePixels: cfg.maxImagePixels})
	if err != nil {
		fmt.Fprintln(stderr, "forgeflow run:", err)
		return exitFailed
	}
	return exitCode(stderr, "run", batch.Run(ctx, eng, e.batchEnv(), files, opts, stdout, stderr))
}

func cmdValidate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cfg config
	fl := flag.NewFlagSet("validate", flag.ContinueOnError)
	fl.SetOutput(stderr)
	cfg.register(fl)
	asJSON := fl.Bool("json", false, "print a JSON object keyed by file with ComfyUI's error and node_errors")
	objectInfo := fl.String("object-info", "", "convert and validate against "+objectInfoUsage)
	if code, ok := parseFlags(fl, args); !ok {
		return code
	}
	if fl.NArg() == 0 {
		fmt.Fprintln(stderr, "forgeflow validate: no workflow files given")
		return exitUsage
	}
	files, err := batch.ExpandPaths(fl.Args())
	if err != nil {
		fmt.Fprintln(stderr, "forgeflow validate:", err)
		return exitUsage
	}
	e, err := cfg.env(nil)
	if err != nil {
		fmt.Fprintln(stderr, "forgeflow validate:", err)
		return exitFailed
	}
	if *objectInfo != "" {
		if e.foreign, err = loadObjectInfo(ctx, *objectInfo); err != nil {
			fmt.Fprintln(stderr, "forgeflow validate:", err)
			return exitFailed
		}
		e.validateForeign = true
	}
	return exitCode(stderr, "validate", batch.Validate(e.batchEnv(), files, *asJSON, stdout))
}

// exitCode maps a batch command's result to the exit status, printing an error other
// than batch.ErrFailed (whose report is already printed).
func exitCode(stderr io.Writer, cmd string, err error) int {
	switch {
	case err == nil:
		return exitOK
	case !errors.Is(err, batch.ErrFailed):
		fmt.Fprintf(stderr, "forgeflow %s: %v\n", cmd, err)
	}
	return exitFailed
}
