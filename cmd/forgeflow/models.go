package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// modelFolder is one entry of `models --json`.
type modelFolder struct {
	Name  string   `json:"name"`
	Dirs  []string `json:"dirs"`
	Files []string `json:"files"`
}

// cmdModels lists the model folders (with their directories and file counts), or the
// files of one folder: what GET /models and GET /models/{folder} serve.
func cmdModels(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "pull" {
		return cmdModelsPull(ctx, args[1:], stdout, stderr)
	}
	var cfg config
	fl := flag.NewFlagSet("models", flag.ContinueOnError)
	fl.SetOutput(stderr)
	cfg.register(fl)
	asJSON := fl.Bool("json", false, "print JSON")
	if code, ok := parseFlags(fl, args); !ok {
		return code
	}
	if fl.NArg() > 1 {
		fmt.Fprintln(stderr, "forgeflow models: give at most one FOLDER")
		return exitUsage
	}
	e, err := cfg.env(nil)
	if err != nil {
		fmt.Fprintln(stderr, "forgeflow models:", err)
		return exitFailed
	}
	names := e.models.Folders()
	if fl.NArg() == 1 {
		if !e.models.Has(fl.Arg(0)) {
			fmt.Fprintf(stderr, "forgeflow models: unknown model folder %q (known: %s)\n", fl.Arg(0), strings.Join(names, ", "))
			return exitFailed
		}
		names = []string{fl.Arg(0)}
	}
	var out []modelFolder
	for _, n := range names {
		dirs, err := e.models.Dirs(n)
		if err != nil {
			fmt.Fprintln(stderr, "forgeflow models:", err)
			return exitFailed
		}
		files, err := e.models.List(n)
		if err != nil {
			fmt.Fprintln(stderr, "forgeflow models:", err)
			return exitFailed
		}
		if files == nil {
			files = []string{}
		}
		out = append(out, modelFolder{Name: n, Dirs: dirs, Files: files})
	}
	if *asJSON {
		if fl.NArg() == 1 {
			return writeJSON(stdout, stderr, out[0])
		}
		return writeJSON(stdout, stderr, out)
	}
	if fl.NArg() == 1 {
		for _, f := range out[0].Files {
			fmt.Fprintln(stdout, f)
		}
		return exitOK
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FOLDER\tFILES\tDIRECTORIES")
	for _, m := range out {
		fmt.Fprintf(tw, "%s\t%d\t%s\n", m.Name, len(m.Files), strings.Join(m.Dirs, ", "))
	}
	tw.Flush()
	return exitOK
}
