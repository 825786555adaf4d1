package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/forgeflow/forgeflow/cmd/forgeflow/internal/batch"
	"github.com/forgeflow/forgeflow/graph"
)

// cmdConvert prints the API prompt of a UI workflow or PNG: what ComfyUI's front end
// would queue for it. With --object-info the conversion uses another server's node
// schemas (a ComfyUI with custom nodes); with --out a folder of workflows is converted
// file by file.
func cmdConvert(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cfg config
	fl := flag.NewFlagSet("convert", flag.ContinueOnError)
	fl.SetOutput(stderr)
	cfg.register(fl)
	objectInfo := fl.String("object-info", "", objectInfoUsage)
	outDir := fl.String("out", "", "write each converted workflow as `DIR`/NAME.json (needed for several files or a folder)")
	if code, ok := parseFlags(fl, args); !ok {
		return code
	}
	if fl.NArg() == 0 {
		fmt.Fprintln(stderr, "forgeflow convert: give a FILE (UI workflow JSON or PNG), or files and folders with --out DIR")
		return exitUsage
	}
	files, err := batch.ExpandPaths(fl.Args())
	if err != nil {
		fmt.Fprintln(stderr, "forgeflow convert:", err)
		return exitUsage
	}
	if *outDir == "" && (len(files) > 1 || len(files) != fl.NArg()) {
		fmt.Fprintln(stderr, "forgeflow convert: several workflows need --out DIR")
		return exitUsage
	}
	var schemas graph.Schemas
	if *objectInfo != "" {
		set, err := loadObjectInfo(ctx, *objectInfo)
		if err != nil {
			fmt.Fprintln(stderr, "forgeflow convert:", err)
			return exitFailed
		}
		schemas = set
	} else {
		e, err := cfg.env(nil)
		if err != nil {
			fmt.Fprintln(stderr, "forgeflow convert:", err)
			return exitFailed
		}
		schemas = e.registry
	}
	if *outDir != "" {
		if err := os.MkdirAll(*outDir, 0o755); err != nil {
			fmt.Fprintln(stderr, "forgeflow convert:", err)
			return exitFailed
		}
	}
	failed := 0
	for _, path := range files {
		out, err := convertFile(path, schemas, *objectInfo != "")
		if err != nil {
			fmt.Fprintf(stderr, "forgeflow convert: %s: %v\n", path, err)
			failed++
			continue
		}
		if *outDir == "" {
			stdout.Write(out)
			continue
		}
		dest := filepath.Join(*outDir, strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))+".json")
		if err := os.WriteFile(dest, out, 0o644); err != nil {
			fmt.Fprintln(stderr, "forgeflow convert:", err)
			failed++
			continue
		}
		fmt.Fprintf(stdout, "%s -> %s\n", path, dest)
	}
	if failed > 0 {
		if len(files) > 1 {
			fmt.Fprintf(stderr, "forgeflow convert: %d of %d workflows failed\n", failed, len(files))
		}
		return exitFailed
	}
	return exitOK
}

// convertFile converts one workflow file to API prompt JSON (newline-terminated).
func convertFile(path string, schemas graph.Schemas, foreign bool) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	doc, err := graph.Load(data)
	if err != nil {
		return nil, err
	}
	p, err := doc.ToPrompt(schemas)
	if err != nil {
		var missing *graph.MissingTypesError
		if errors.As(err, &missing) && !foreign {
			return nil, fmt.Errorf("%w (forgeflow has no such nodes; to convert for a server that has them, such as a ComfyUI with custom nodes, give its schemas: --object-info FILE|URL)", err)
		}
		return nil, err
	}
	out, err := graph.EncodePrompt(p)
	if err != nil {
		return nil, err
	}
	if len(out) > 0 && out[len(out)-1] != '\n' {
		out = append(out, '\n')
	}
	return out, nil
}
