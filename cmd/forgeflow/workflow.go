package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
	"github.com/forgeflow/forgeflow/server"
)

// validator returns the check POST /prompt, run and validate apply before running a
// prompt.
func validator(reg *nodes.Registry, dirs nodes.Dirs) server.Validator {
	return server.GraphValidator(reg, dirs)
}

// workflowExts are the files a folder argument contributes.
var workflowExts = map[string]bool{".json": true, ".png": true}

// expandPaths turns file and folder arguments into workflow files: a folder gives its
// own .json and .png files, sorted (not those of its subfolders, so that a folder of
// workflows can keep inputs or variants beside them).
func expandPaths(args []string) ([]string, error) {
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

// prepare loads, converts and validates one file. A failure is a *server.Rejection,
// ComfyUI's error shape.
func prepare(path string, e *env) (*prepared, error) {
	reg := e.registry
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, rejection("invalid_prompt", "Cannot read workflow", err.Error())
	}
	doc, err := graph.Load(data)
	if err != nil {
		return nil, rejection("invalid_prompt", "Invalid workflow", err.Error())
	}
	p := &prepared{path: path, format: doc.Format.String()}
	if p.prompt, err = doc.ToPrompt(reg); err != nil {
		return nil, rejection("invalid_prompt", "Cannot convert workflow to a prompt", err.Error())
	}
	if p.workflow, err = workflowJSON(doc, data); err != nil {
		return nil, rejection("invalid_prompt", "Invalid workflow", err.Error())
	}
	outs, _, err := validator(reg, nodeDirs(e.dirs))(p.prompt, nil)
	if err != nil {
		return nil, err
	}
	p.outputs = outs
	return p, nil
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

// rejection builds ComfyUI's {error, node_errors} for a file that cannot be queued.
func rejection(typ, msg, details string) *server.Rejection {
	e, _ := json.Marshal(map[string]any{"type": typ, "message": msg, "details": details, "extra_info": map[string]any{}})
	return &server.Rejection{Err: e, NodeErrors: json.RawMessage("{}")}
}

// rejectionText is a one-line description of a rejection for humans.
func rejectionText(err error) string {
	rej, ok := err.(*server.Rejection)
	if !ok {
		return err.Error()
	}
	var e struct {
		Message string `json:"message"`
		Details string `json:"details"`
	}
	json.Unmarshal(rej.Err, &e)
	s := e.Message
	if e.Details != "" {
		s += ": " + e.Details
	}
	var nodeErrs map[string]struct {
		ClassType string `json:"class_type"`
		Errors    []struct {
			Message string `json:"message"`
			Details string `json:"details"`
		} `json:"errors"`
	}
	json.Unmarshal(rej.NodeErrors, &nodeErrs)
	ids := make([]string, 0, len(nodeErrs))
	for id := range nodeErrs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		for _, ne := range nodeErrs[id].Errors {
			s += fmt.Sprintf("; node %s (%s): %s", id, nodeErrs[id].ClassType, ne.Message)
			if ne.Details != "" {
				s += ": " + ne.Details
			}
		}
	}
	return s
}
