package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1 // a workflow failed or was invalid, or the server stopped on an error
	exitUsage  = 2 // bad command line
)

const usage = `forgeflow: a node-graph image-generation engine, compatible with ComfyUI 0.3.64

Usage:
  forgeflow serve [flags]            run the server and editor (http://127.0.0.1:8188)
  forgeflow run [flags] PATH...      run workflows (API or UI JSON, or PNG; folders too)
  forgeflow worker --queue nats://...
                                     execute prompts of a JetStream cluster
  forgeflow nats --store DIR         run an embedded JetStream node (--listen --port
                                     --cluster-name --cluster-listen --routes)
  forgeflow validate [flags] PATH... check workflows against the node schemas
  forgeflow nodes [--json] [--coverage]
                                     list the nodes (object_info), or compare with ComfyUI's
  forgeflow convert FILE             UI workflow JSON or PNG -> API prompt JSON on stdout
  forgeflow models [--json] [FOLDER] list the model folders, or one folder's files
  forgeflow models pull SOURCE       download a model: https URL, hf:owner/repo/file or a
                                     starter name (--list); "tokenizers" fetches the
                                     CLIP and T5 tokenizers (--folder --sha256 --name)
  forgeflow synth --out FILE         write a full-size checkpoint with random weights (--family sd15, flux-dev, ...)
  forgeflow bench unet --ckpt FILE   time one UNet evaluation (--width --height --batch --json)
  forgeflow bench flux --ckpt FILE   time one Flux transformer evaluation (--width --height --tokens --json)

Run "forgeflow COMMAND -h" for the flags of a command.
`

// run is the whole program: main only wires the process to it, so tests call it
// in-process.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return cmdServe(ctx, rest, stdout, stderr)
	case "run":
		return cmdRun(ctx, rest, stdout, stderr)
	case "worker":
		return cmdWorker(ctx, rest, stdout, stderr)
	case "nats":
		return cmdNats(ctx, rest, stdout, stderr)
	case "validate":
		return cmdValidate(ctx, rest, stdout, stderr)
	case "nodes":
		return cmdNodes(ctx, rest, stdout, stderr)
	case "convert":
		return cmdConvert(ctx, rest, stdout, stderr)
	case "models":
		return cmdModels(ctx, rest, stdout, stderr)
	case "synth":
		return cmdSynth(ctx, rest, stdout, stderr)
	case "bench":
		return cmdBench(ctx, rest, stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "forgeflow: unknown command %q\n\n%s", cmd, usage)
	return exitUsage
}
