package main

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
)

// TestCoverageListsUpscaleAndImageNodes: `forgeflow nodes --coverage` counts issue 11's
// upscale, animation and image-utility classes as implemented, the two upscale-model
// classes and the kornia ones too although ComfyUI's reference lacks them (spandrel and
// kornia missing there).
func TestCoverageListsUpscaleAndImageNodes(t *testing.T) {
	code, out, _ := runCLI(t, context.Background(), "nodes", "--coverage", "--json")
	if code != exitOK {
		t.Fatal(code)
	}
	var cov coverage
	if err := json.Unmarshal([]byte(out), &cov); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"UpscaleModelLoader", "ImageUpscaleWithModel", "SaveAnimatedWEBP", "SaveAnimatedPNG",
		"ImageStitch", "LoadImageOutput", "RebatchImages", "SaveImageWebsocket", "Morphology", "ImageRGBToYUV", "ImageYUVToRGB", "RebatchLatents"} {
		if !slices.Contains(cov.Implemented, n) {
			t.Errorf("coverage does not list %s as implemented", n)
		}
		if slices.Contains(cov.Extra, n) {
			t.Errorf("coverage lists %s as a forgeflow-only node", n)
		}
	}
}
