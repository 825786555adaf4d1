package batch

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/forgeflow/forgeflow/executor"
	"github.com/forgeflow/forgeflow/graph"
)

// workflowExts are the files a folder argument contributes.
var workflowExts = map[string]bool{".json": true, ".png": true}

// ExpandPaths turns file and folder arguments into workflow files: a folder gives its
// own .json and .png files, sorted (not those of its subfolders, so that a folder of
// workflows can keep inputs or variants beside them).
func ExpandPaths(args []string) ([]string, error) {
	var out []string
	for _, a := range args {
		st, err := os.Stat(a)
		if err != nil {
			return nil, err
		}
		if !st.IsDir() {
			out = append(out, a)
			continue
		}
		entries, err := os.ReadDir(a)
		if err != nil {
			return nil, err
		}
		n := len(out)
		for _, e := range entries {
			if e.Type().IsRegular() && workflowExts[strings.ToLower(filepath.Ext(e.Name()))] {
				out = append(out, filepath.Join(a, e.Name()))
			}
		}
		if len(out) == n {
			return nil, fmt.Errorf("%s: no .json or .png workflow files", a)
		}
	}
	return out, nil
}

// prepared is a workflow file ready to run: its API prompt, the UI workflow to embed
// in saved images (extra_pnginfo), and the outputs validation selected.
type prepared struct {
	path     string
	format   string
	prompt   graph.Prompt
	workflow map[string]any
	outputs  []string
}

// prepare loads, converts and validates one file with executor.Validate, the check
// POST /prompt applies too. A failure is an *executor.Rejection, ComfyUI's error shape.
func prepare(path string, e Env) (*prepared, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, executor.Reject(graph.ErrInvalidPrompt, "Cannot read workflow", err.Error())
	}
	doc, err := graph.Load(data)
	if err != nil {
		return nil, executor.Reject(graph.ErrInvalidPrompt, "Invalid workflow", err.Error())
	}
	p := &prepared{path: path, format: doc.Format.String()}
	var conv graph.Schemas = e.Registry
	if e.Schemas != nil {
		conv = e.Schemas
	}
	if p.prompt, err = doc.ToPrompt(conv); err != nil {
		var missing *graph.MissingTypesError
		if errors.As(err, &missing) {
			return nil, missingTypes(missing.Types, e.Schemas != nil)
		}
		return nil, executor.Reject(graph.ErrInvalidPrompt, "Cannot convert workflow to a prompt", err.Error())
	}
	if p.workflow, err = workflowJSON(doc, data); err != nil {
		return nil, executor.Reject(graph.ErrInvalidPrompt, "Invalid workflow", err.Error())
	}
	val := conv
	if !e.ValidateWithSchemas {
		val = e.Registry
	}
	if types := absentTypes(p.prompt, val); len(types) > 0 {
		return nil, missingTypes(types, e.Schemas != nil && e.ValidateWithSchemas)
	}
	if e.ValidateWithSchemas && e.Schemas != nil {
		res := graph.Validate(p.prompt, e.Schemas)
		if !res.OK() {
			return nil, &executor.Rejection{Err: res.Error, NodeErrors: res.NodeErrors}
		}
		p.outputs = res.Outputs
		return p, nil
	}
	if p.outputs, _, err = executor.Validate(e.Registry, e.Dirs, p.prompt, nil); err != nil {
		return nil, err
	}
	return p, nil
}

// absentTypes lists, sorted, the node types of p that s does not know.
func absentTypes(p graph.Prompt, s graph.Schemas) []string {
	seen := map[string]bool{}
	for _, n := range p {
		if _, ok := s.Schema(n.ClassType); !ok && !seen[n.ClassType] {
			seen[n.ClassType] = true
		}
	}
	out := make([]string, 0, len(seen))
	for t := range seen {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// missingTypes is the rejection of a workflow whose node types are not all known: the
// message of ComfyUI's (which names the first), details naming every one.
func missingTypes(types []string, foreign bool) *executor.Rejection {
	details := "node types not available here: " + strings.Join(types, ", ") +
		" (forgeflow cannot run them; to convert or check workflows for a server that has them, such as a ComfyUI with custom nodes: forgeflow convert|validate --object-info FILE|URL with its /object_info)"
	if foreign {
		details = "node types the given --object-info does not have: " + strings.Join(types, ", ")
	}
	return executor.Reject(graph.ErrInvalidPrompt, fmt.Sprintf("Cannot execute because node %s does not exist.", types[0]), details)
}

// workflowJSON returns the UI workflow as a generic JSON object, as the front end
// sends it in extra_data.extra_pnginfo.workflow; nil for an API prompt.
func workflowJSON(doc *graph.Document, data []byte) (map[string]any, error) {
	var raw []byte
	switch doc.Format {
	case graph.FormatUI:
		raw = data
	case graph.FormatPNG:
		chunks, err := graph.ReadPNGText(bytes.NewReader(data))
		if err != nil {
			return nil, err
		}
		text, ok := graph.PNGText(chunks, "workflow")
		if !ok {
			return nil, nil
		}
		raw = []byte(text)
	default:
		return nil, nil
	}
	var w map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&w); err != nil {
		return nil, err
	}
	return w, nil
}

// rejectionText is a one-line description of a rejection for humans.
func rejectionText(err error) string {
	var rej *executor.Rejection
	if !errors.As(err, &rej) {
		return err.Error()
	}
	s := rej.Err.Message
	if rej.Err.Details != "" {
		s += ": " + rej.Err.Details
	}
	ids := make([]string, 0, len(rej.NodeErrors))
	for id := range rej.NodeErrors {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		ne := rej.NodeErrors[id]
		for _, e := range ne.Errors {
			s += fmt.Sprintf("; node %s (%s): %s", id, ne.ClassType, e.Message)
			if e.Details != "" {
				s += ": " + e.Details
			}
		}
	}
	return s
}
