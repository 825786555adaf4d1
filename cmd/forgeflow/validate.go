package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"

	"github.com/forgeflow/forgeflow/server"
)

// validateReport is one file's --json entry: ComfyUI's POST /prompt answer shapes.
type validateReport struct {
	Valid      bool            `json:"valid"`
	Format     string          `json:"format,omitempty"`
	Outputs    []string        `json:"outputs"`
	Error      json.RawMessage `json:"error"`
	NodeErrors json.RawMessage `json:"node_errors"`
}

func cmdValidate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cfg config
	fl := flag.NewFlagSet("validate", flag.ContinueOnError)
	fl.SetOutput(stderr)
	cfg.register(fl)
	asJSON := fl.Bool("json", false, "print a JSON object keyed by file with ComfyUI's error and node_errors")
	if code, ok := parseFlags(fl, args); !ok {
		return code
	}
	if fl.NArg() == 0 {
		fmt.Fprintln(stderr, "forgeflow validate: no workflow files given")
		return exitUsage
	}
	files, err := expandPaths(fl.Args())
	if err != nil {
		fmt.Fprintln(stderr, "forgeflow validate:", err)
		return exitUsage
	}
	e, err := cfg.env(nil)
	if err != nil {
		fmt.Fprintln(stderr, "forgeflow validate:", err)
		return exitFailed
	}
	code := exitOK
	reports := map[string]validateReport{}
	for _, f := range files {
		p, err := prepare(f, e)
		rep := validateReport{Valid: err == nil, Outputs: []string{}, Error: json.RawMessage("null"), NodeErrors: json.RawMessage("{}")}
		if err != nil {
			code = exitFailed
			if rej, ok := err.(*server.Rejection); ok {
				rep.Error, rep.NodeErrors = rej.Err, rej.NodeErrors
			}
			if !*asJSON {
				fmt.Fprintf(stdout, "FAIL  %s: %s\n", f, rejectionText(err))
			}
		} else {
			rep.Format, rep.Outputs = p.format, p.outputs
			if !*asJSON {
				fmt.Fprintf(stdout, "ok    %s (%s, %d nodes, outputs %v)\n", f, p.format, len(p.prompt), p.outputs)
			}
		}
		reports[f] = rep
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(reports); err != nil {
			fmt.Fprintln(stderr, "forgeflow validate:", err)
			return exitFailed
		}
	}
	return code
}
