package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/forgeflow/forgeflow/graph"
)

// cmdConvert prints the API prompt of a UI workflow or PNG: what ComfyUI's front end
// would queue for it.
func cmdConvert(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cfg config
	fl := flag.NewFlagSet("convert", flag.ContinueOnError)
	fl.SetOutput(stderr)
	cfg.register(fl)
	if code, ok := parseFlags(fl, args); !ok {
		return code
	}
	if fl.NArg() != 1 {
		fmt.Fprintln(stderr, "forgeflow convert: give exactly one FILE (UI workflow JSON or PNG)")
		return exitUsage
	}
	e, err := cfg.env(nil)
	if err != nil {
		fmt.Fprintln(stderr, "forgeflow convert:", err)
		return exitFailed
	}
	path := fl.Arg(0)
	data, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintln(stderr, "forgeflow convert:", err)
		return exitFailed
	}
	doc, err := graph.Load(data)
	if err != nil {
		fmt.Fprintf(stderr, "forgeflow convert: %s: %v\n", path, err)
		return exitFailed
	}
	p, err := doc.ToPrompt(e.registry)
	if err != nil {
		fmt.Fprintf(stderr, "forgeflow convert: %s: %v\n", path, err)
		return exitFailed
	}
	out, err := graph.EncodePrompt(p)
	if err != nil {
		fmt.Fprintf(stderr, "forgeflow convert: %s: %v\n", path, err)
		return exitFailed
	}
	stdout.Write(out)
	if len(out) > 0 && out[len(out)-1] != '\n' {
		fmt.Fprintln(stdout)
	}
	return exitOK
}
