package batch

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/forgeflow/forgeflow/executor"
	"github.com/forgeflow/forgeflow/graph"
)

// validateReport is one file's --json entry: ComfyUI's POST /prompt answer shapes.
type validateReport struct {
	Valid      bool                         `json:"valid"`
	Format     string                       `json:"format,omitempty"`
	Outputs    []string                     `json:"outputs"`
	Error      *graph.ValidationError       `json:"error"`
	NodeErrors map[string]*graph.NodeErrors `json:"node_errors"`
}

// Validate loads, converts and validates each file, printing ok/FAIL lines, or with
// asJSON one object keyed by file with ComfyUI's error and node_errors. It returns
// ErrFailed when a file is invalid.
func Validate(e Env, files []string, asJSON bool, stdout io.Writer) error {
	var failed bool
	reports := map[string]validateReport{}
	for _, f := range files {
		p, err := prepare(f, e)
		rep := validateReport{Valid: err == nil, Outputs: []string{}, NodeErrors: map[string]*graph.NodeErrors{}}
		if err != nil {
			failed = true
			var rej *executor.Rejection
			if errors.As(err, &rej) {
				rep.Error = rej.Err
				if rej.NodeErrors != nil {
					rep.NodeErrors = rej.NodeErrors
				}
			}
			if !asJSON {
				fmt.Fprintf(stdout, "FAIL  %s: %s\n", f, rejectionText(err))
			}
		} else {
			rep.Format, rep.Outputs = p.format, p.outputs
			if !asJSON {
				fmt.Fprintf(stdout, "ok    %s (%s, %d nodes, outputs %v)\n", f, p.format, len(p.prompt), p.outputs)
			}
		}
		reports[f] = rep
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(reports); err != nil {
			return err
		}
	}
	if failed {
		return ErrFailed
	}
	return nil
}
