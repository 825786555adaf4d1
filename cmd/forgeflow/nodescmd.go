package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
)

// coverage is `nodes --coverage --json`.
type coverage struct {
	ComfyUIVersion string   `json:"comfyui_version"`
	Total          int      `json:"total"`
	Implemented    []string `json:"implemented"`
	Missing        []string `json:"missing"`
	// Extra are forgeflow nodes ComfyUI 0.3.64 does not have.
	Extra []string `json:"extra"`
}

func cmdNodes(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cfg config
	fl := flag.NewFlagSet("nodes", flag.ContinueOnError)
	fl.SetOutput(stderr)
	cfg.register(fl)
	asJSON := fl.Bool("json", false, "print the /object_info JSON")
	cover := fl.Bool("coverage", false, "compare with ComfyUI 0.3.64's node list")
	if code, ok := parseFlags(fl, args); !ok {
		return code
	}
	if fl.NArg() > 0 {
		fmt.Fprintf(stderr, "forgeflow nodes: unexpected arguments %q\n", fl.Args())
		return exitUsage
	}
	e, err := cfg.env(nil)
	if err != nil {
		fmt.Fprintln(stderr, "forgeflow nodes:", err)
		return exitFailed
	}
	reg := e.registry
	if *cover {
		classes := comfyUIClasses()
		c := coverage{ComfyUIVersion: comfyUIVersion, Total: len(classes), Implemented: []string{}, Missing: []string{}, Extra: []string{}}
		known := map[string]bool{}
		for _, n := range classes {
			known[n] = true
			if _, ok := reg.Schema(n); ok {
				c.Implemented = append(c.Implemented, n)
			} else {
				c.Missing = append(c.Missing, n)
			}
		}
		for _, n := range reg.Names() {
			if !known[n] {
				c.Extra = append(c.Extra, n)
			}
		}
		if *asJSON {
			return writeJSON(stdout, stderr, c)
		}
		fmt.Fprintf(stdout, "ComfyUI %s nodes implemented: %d of %d (%.1f%%)\n\n", comfyUIVersion, len(c.Implemented), c.Total, 100*float64(len(c.Implemented))/float64(c.Total))
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		for _, n := range classes {
			mark := "missing"
			if _, ok := reg.Schema(n); ok {
				mark = "yes"
			}
			fmt.Fprintf(tw, "%s\t%s\n", n, mark)
		}
		tw.Flush()
		if len(c.Extra) > 0 {
			fmt.Fprintf(stdout, "\nforgeflow only: %v\n", c.Extra)
		}
		return exitOK
	}
	if *asJSON {
		return writeJSON(stdout, stderr, reg.ObjectInfo())
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CLASS\tCATEGORY\tDISPLAY NAME\tOUTPUT")
	for _, n := range reg.Names() {
		s, _ := reg.Schema(n)
		display := s.DisplayName
		if display == "" {
			display = n // ComfyUI shows the class name when a node has no display name
		}
		out := ""
		if s.OutputNode {
			out = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", n, s.Category, display, out)
	}
	tw.Flush()
	return exitOK
}

func writeJSON(stdout, stderr io.Writer, v any) int {
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		fmt.Fprintln(stderr, "forgeflow:", err)
		return exitFailed
	}
	return exitOK
}
