package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// customWorkflow is a UI workflow through a custom node forgeflow does not have
// (with two widgets) and, when other is set, a second one.
func customWorkflow(other bool) string {
	extra, link := "", ""
	if other {
		extra = `,{"id": 4, "type": "OtherPackNode", "pos": [0, 400], "size": [200, 60], "flags": {}, "order": 3, "mode": 0,
			"inputs": [], "outputs": [], "properties": {}, "widgets_values": [7]}`
	}
	return `{"version": 1, "state": {"lastNodeId": 4, "lastLinkId": 2},
 "nodes": [
  {"id": 1, "type": "EmptyImage", "pos": [0, 0], "size": [270, 130], "flags": {}, "order": 0, "mode": 0, "inputs": [],
   "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [1]}], "properties": {}, "widgets_values": [64, 48, 1, 0]},
  {"id": 2, "type": "SuperUpscale", "pos": [300, 0], "size": [200, 80], "flags": {}, "order": 1, "mode": 0,
   "inputs": [{"name": "image", "type": "IMAGE", "link": 1}],
   "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [2]}], "properties": {}, "widgets_values": [1.5, "lanczos"]},
  {"id": 3, "type": "SaveImage", "pos": [600, 0], "size": [300, 300], "flags": {}, "order": 2, "mode": 0,
   "inputs": [{"name": "images", "type": "IMAGE", "link": 2}], "outputs": [], "properties": {}, "widgets_values": ["x"]}` + extra + link + `
 ],
 "links": [{"id": 1, "origin_id": 1, "origin_slot": 0, "target_id": 2, "target_slot": 0, "type": "IMAGE"},
           {"id": 2, "origin_id": 2, "origin_slot": 0, "target_id": 3, "target_slot": 0, "type": "IMAGE"}],
 "groups": [], "config": {}, "extra": {}}`
}

// customObjectInfo is forgeflow's own /object_info plus the custom node, as a ComfyUI
// with that node pack would answer.
func customObjectInfo(t *testing.T) []byte {
	t.Helper()
	code, out, errOut := runCLI(t, context.Background(), "nodes", "--json")
	if code != exitOK {
		t.Fatal(errOut)
	}
	var info map[string]any
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatal(err)
	}
	var custom any
	if err := json.Unmarshal([]byte(`{"input": {"required": {"image": ["IMAGE"], "scale": ["FLOAT", {"default": 2.0, "min": 1, "max": 8, "step": 0.5}],
		"method": [["nearest", "lanczos"]]}}, "input_order": {"required": ["image", "scale", "method"]},
		"output": ["IMAGE"], "output_is_list": [false], "output_name": ["IMAGE"], "name": "SuperUpscale", "display_name": "Super Upscale",
		"description": "", "python_module": "custom_nodes.super", "category": "image", "output_node": false}`), &custom); err != nil {
		t.Fatal(err)
	}
	info["SuperUpscale"] = custom
	b, err := json.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestObjectInfoFlag(t *testing.T) {
	dir := t.TempDir()
	wf := writeText(t, filepath.Join(dir, "custom.json"), customWorkflow(false))
	wf2 := writeText(t, filepath.Join(dir, "two_packs.json"), customWorkflow(true))
	infoFile := filepath.Join(t.TempDir(), "object_info.json")
	info := customObjectInfo(t)
	if err := os.WriteFile(infoFile, info, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	// Without the other server's schemas every missing type is named, with the way out.
	code, _, errOut := runCLI(t, ctx, "convert", wf2)
	if code != exitFailed || !strings.Contains(errOut, "OtherPackNode, SuperUpscale") || !strings.Contains(errOut, "--object-info") {
		t.Fatalf("convert without --object-info: exit %d %q", code, errOut)
	}
	code, out, _ := runCLI(t, ctx, "validate", "--json", wf2)
	if code != exitFailed || !strings.Contains(out, "Cannot execute because node OtherPackNode does not exist.") || !strings.Contains(out, "OtherPackNode, SuperUpscale") {
		t.Fatalf("validate without --object-info: exit %d %s", code, out)
	}
	code, out, errOut = runCLI(t, ctx, "run", wf, "--base-directory", t.TempDir())
	if code != exitFailed || !strings.Contains(out+errOut, "SuperUpscale") {
		t.Fatalf("run of a custom node: exit %d %s %s", code, out, errOut)
	}

	// With them: converted for that server, the custom node's widgets by name.
	code, out, errOut = runCLI(t, ctx, "convert", wf, "--object-info", infoFile)
	if code != exitOK {
		t.Fatalf("convert --object-info: exit %d %s", code, errOut)
	}
	var prompt map[string]struct {
		ClassType string         `json:"class_type"`
		Inputs    map[string]any `json:"inputs"`
	}
	if err := json.Unmarshal([]byte(out), &prompt); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if n := prompt["2"]; n.ClassType != "SuperUpscale" || n.Inputs["scale"] != 1.5 || n.Inputs["method"] != "lanczos" {
		t.Fatalf("converted node 2: %+v", n)
	}
	code, out, errOut = runCLI(t, ctx, "validate", wf, "--object-info", infoFile)
	if code != exitOK || !strings.HasPrefix(out, "ok ") {
		t.Fatalf("validate --object-info: exit %d %s %s", code, out, errOut)
	}
	// A type the other server lacks too is named.
	code, out, _ = runCLI(t, ctx, "validate", "--json", wf2, "--object-info", infoFile)
	if code != exitFailed || !strings.Contains(out, "OtherPackNode") || strings.Contains(out, "SuperUpscale does not") {
		t.Fatalf("validate --object-info of a third pack: %s", out)
	}

	// A folder, for a server given by URL (its base URL: /object_info is added).
	var asked string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked = r.URL.Path
		if r.URL.Path != "/object_info" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(info)
	}))
	defer srv.Close()
	folder := t.TempDir()
	writeText(t, filepath.Join(folder, "a.json"), customWorkflow(false))
	writeText(t, filepath.Join(folder, "b.json"), customWorkflow(false))
	outDir := filepath.Join(t.TempDir(), "api")
	code, out, errOut = runCLI(t, ctx, "convert", folder, "--out", outDir, "--object-info", srv.URL)
	if code != exitOK || asked != "/object_info" {
		t.Fatalf("convert a folder: exit %d (asked %s) %s %s", code, asked, out, errOut)
	}
	for _, f := range []string{"a.json", "b.json"} {
		if b, err := os.ReadFile(filepath.Join(outDir, f)); err != nil || !strings.Contains(string(b), `"SuperUpscale"`) {
			t.Fatalf("%s: %v %s", f, err, b)
		}
	}
	if code, _, _ := runCLI(t, ctx, "convert", folder); code != exitUsage {
		t.Fatal("a folder without --out is a usage error")
	}
	for _, bad := range []string{filepath.Join(dir, "nope.json"), srv.URL + "/missing", wf} {
		if code, _, errOut := runCLI(t, ctx, "convert", wf, "--object-info", bad); code != exitFailed || !strings.Contains(errOut, "--object-info") {
			t.Errorf("--object-info %s: exit %d %q", bad, code, errOut)
		}
	}
}
