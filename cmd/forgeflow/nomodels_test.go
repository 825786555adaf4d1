package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// With no model files, the default graph's checkpoint loader fails as in ComfyUI
// (value_not_in_list, "Value not in list", details naming ckpt_name and the empty
// list), and the details go on to say which folders were searched and how to get a
// model.
func TestNoModelsSaysWhereAndHow(t *testing.T) {
	base := t.TempDir()
	wf := writeText(t, filepath.Join(t.TempDir(), "txt2img.json"), `{
 "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ""}},
 "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
 "8": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["4", 2]}},
 "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "ComfyUI"}}}`)
	code, out, errOut := runCLI(t, context.Background(), "validate", "--json", wf, "--base-directory", base)
	if code != exitFailed {
		t.Fatalf("exit %d: %s %s", code, out, errOut)
	}
	var rep map[string]struct {
		NodeErrors map[string]struct {
			Errors []struct {
				Type, Message, Details string
			} `json:"errors"`
		} `json:"node_errors"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	errs := rep[wf].NodeErrors["4"].Errors
	if len(errs) != 1 {
		t.Fatalf("node 4 errors: %+v", rep[wf].NodeErrors)
	}
	e := errs[0]
	dir := filepath.Join(base, "models", "checkpoints")
	if e.Type != "value_not_in_list" || e.Message != "Value not in list" || !strings.HasPrefix(e.Details, "ckpt_name: '' not in []") {
		t.Fatalf("error %+v is not ComfyUI's", e)
	}
	for _, want := range []string{dir, "forgeflow models pull --list", "--folder checkpoints"} {
		if !strings.Contains(e.Details, want) {
			t.Errorf("details %q do not mention %q", e.Details, want)
		}
	}
}
