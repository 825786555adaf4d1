package graph

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/forgeflow/forgeflow/internal/testenv"
)

// testObjectInfo is a hand-written /object_info with the shapes the tests need: a
// sampler with a seed, combos in both forms, an upload widget, optional and hidden
// inputs, an output node.
const testObjectInfo = `{
 "Loader": {"input": {"required": {"ckpt_name": [["a.safetensors", "b.safetensors"], {}]}},
   "input_order": {"required": ["ckpt_name"]},
   "output": ["MODEL", "CLIP", "VAE"], "output_is_list": [false, false, false],
   "output_name": ["MODEL", "CLIP", "VAE"], "name": "Loader", "display_name": "Load Checkpoint",
   "description": "", "python_module": "nodes", "category": "loaders", "output_node": false},
 "Sampler": {"input": {"required": {
     "model": ["MODEL", {}],
     "seed": ["INT", {"default": 0, "min": 0, "max": 18446744073709551615, "control_after_generate": true}],
     "steps": ["INT", {"default": 20, "min": 1, "max": 10000}],
     "cfg": ["FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}],
     "sampler_name": ["COMBO", {"options": ["euler", "heun"], "tooltip": "t"}],
     "latent": ["LATENT", {}]},
     "optional": {"denoise": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0}], "mask": ["MASK"]},
     "hidden": {"unique_id": "UNIQUE_ID"}},
   "input_order": {"required": ["model", "seed", "steps", "cfg", "sampler_name", "latent"], "optional": ["denoise", "mask"], "hidden": ["unique_id"]},
   "output": ["LATENT"], "output_is_list": [false], "output_name": ["LATENT"], "name": "Sampler",
   "display_name": "Sampler", "description": "", "python_module": "nodes", "category": "sampling", "output_node": false},
 "Noise": {"input": {"required": {"noise_seed": ["INT", {"default": 0, "min": 0, "max": 18446744073709551615}],
     "text": ["STRING", {"multiline": true, "dynamicPrompts": true}], "flag": ["BOOLEAN", {"default": true}]}},
   "input_order": {"required": ["noise_seed", "text", "flag"]},
   "output": ["LATENT", "IMAGE,MASK"], "output_is_list": [false, false], "output_name": ["LATENT", "MIXED"], "name": "Noise",
   "display_name": "Noise", "description": "", "python_module": "nodes", "category": "x", "output_node": false},
 "LoadImg": {"input": {"required": {"image": [["x.png", "y.png"], {"image_upload": true}]}},
   "input_order": {"required": ["image"]},
   "output": ["IMAGE", "MASK"], "output_is_list": [false, false], "output_name": ["IMAGE", "MASK"], "name": "LoadImg",
   "display_name": "Load Image", "description": "", "python_module": "nodes", "category": "image", "output_node": false},
 "Save": {"input": {"required": {"images": ["IMAGE", {}], "filename_prefix": ["STRING", {"default": "ComfyUI"}]},
     "hidden": {"prompt": "PROMPT"}},
   "input_order": {"required": ["images", "filename_prefix"], "hidden": ["prompt"]},
   "output": [], "output_is_list": [], "output_name": [], "name": "Save", "display_name": "Save Image",
   "description": "", "python_module": "nodes", "category": "image", "output_node": true, "experimental": true},
 "Any": {"input": {"required": {"source": ["*", {}], "pair": ["IMAGE,LATENT", {}]}, "optional": {"n": ["INT,FLOAT", {"forceInput": true}]}},
   "input_order": {"required": ["source", "pair"], "optional": ["n"]},
   "output": ["*"], "output_is_list": [false], "output_name": ["ANY"], "name": "Any", "display_name": "Any",
   "description": "", "python_module": "nodes", "category": "utils", "output_node": true},
 "Blur": {"input": {"required": {"image": ["IMAGE", {}], "radius": ["INT", {"default": 1, "min": 1, "max": 31}]}},
   "input_order": {"required": ["image", "radius"]},
   "output": ["IMAGE"], "output_is_list": [false], "output_name": ["IMAGE"], "name": "Blur",
   "display_name": "Blur", "description": "", "python_module": "nodes", "category": "image", "output_node": false},
 "Composite": {"input": {"required": {"mask": ["MASK", {}], "image": ["IMAGE", {}]}},
   "input_order": {"required": ["mask", "image"]},
   "output": ["IMAGE"], "output_is_list": [false], "output_name": ["IMAGE"], "name": "Composite",
   "display_name": "Composite", "description": "", "python_module": "nodes", "category": "image", "output_node": false},
 "Int": {"input": {"required": {"value": ["INT", {"default": 0, "min": 0, "max": 100, "control_after_generate": true}],
     "other": ["INT", {"default": 3, "min": 0, "max": 9, "control_after_generate": false}]}},
   "input_order": {"required": ["value", "other"]},
   "output": ["INT"], "output_is_list": [false], "output_name": ["INT"], "name": "Int",
   "display_name": "Int", "description": "", "python_module": "nodes", "category": "utils", "output_node": false},
 "Decode": {"input": {"required": {"samples": ["LATENT", {}], "vae": ["VAE", {}]}},
   "input_order": {"required": ["samples", "vae"]},
   "output": ["IMAGE"], "output_is_list": [false], "output_name": ["IMAGE"], "name": "Decode",
   "display_name": "VAE Decode", "description": "", "python_module": "nodes", "category": "latent", "output_node": false}
}`

var (
	testSchemasOnce sync.Once
	testSchemasSet  SchemaSet
	testSchemasErr  error
)

// testSchemas returns the schemas of testObjectInfo.
func testSchemas(t testing.TB) SchemaSet {
	t.Helper()
	testSchemasOnce.Do(func() { testSchemasSet, testSchemasErr = SchemasFromObjectInfo([]byte(testObjectInfo)) })
	if testSchemasErr != nil {
		t.Fatal(testSchemasErr)
	}
	return testSchemasSet
}

var (
	refOnce    sync.Once
	refSchemas SchemaSet
	refErr     error
)

// referenceSchemas reads ComfyUI 0.3.64's /object_info from the shared reference set.
func referenceSchemas(t testing.TB) SchemaSet {
	t.Helper()
	dir := testenv.ReferenceDir(t)
	refOnce.Do(func() {
		data, err := os.ReadFile(filepath.Join(dir, "comfyui-0.3.64-object_info.json"))
		if err != nil {
			refErr = err
			return
		}
		refSchemas, refErr = SchemasFromObjectInfo(data)
	})
	if refErr != nil {
		t.Fatal(refErr)
	}
	return refSchemas
}
