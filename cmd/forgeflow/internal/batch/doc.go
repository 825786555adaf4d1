// Package batch is what `forgeflow run` and `forgeflow validate` do once their flags
// are parsed: it expands workflow files and folders, loads and converts each file,
// validates it with executor.Validate (the check POST /prompt applies too), runs it on
// an executor.Engine with progress on the terminal and prints the summary.
//
// It depends on the executor, graph and nodes, never on the server: deps_test.go fails
// on any server import, so the command-line path stays free of HTTP types. The design
// is in codex/cli.md.
package batch

import (
	"errors"

	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// Env is what the commands load and validate workflows with.
type Env struct {
	// Registry converts UI workflows and validates prompts.
	Registry *nodes.Registry
	// Dirs are the folders nodes and their input checks read and write.
	Dirs nodes.Dirs
	// Schemas, when set, are another server's node schemas (its /object_info: a
	// ComfyUI with custom nodes): UI workflows are converted with them instead of the
	// registry, and with ValidateWithSchemas prompts are validated against them too
	// (what that server would accept) rather than against what runs here.
	Schemas             graph.Schemas
	ValidateWithSchemas bool
}

// ErrFailed is returned when a workflow failed, was invalid or was interrupted; the
// report has been printed.
var ErrFailed = errors.New("batch: not every workflow succeeded")
