package builtin

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/forgeflow/forgeflow/internal/testenv"
	"github.com/forgeflow/forgeflow/nodes"
)

// fileCombos are inputs whose choices list local files: compared by form only.
var fileCombos = map[string][]string{
	"LoadImage":     {"image"},
	"LoadImageMask": {"image"},
}

// modelCombos are inputs whose choices list model files (weights/folders): compared by
// form only; ComfyUI validates them against the list, so they are not CustomValidation.
var modelCombos = map[string][]string{
	"CheckpointLoaderSimple": {"ckpt_name"},
	"VAELoader":              {"vae_name"},
	"CLIPLoader":             {"clip_name"},
	"DualCLIPLoader":         {"clip_name1", "clip_name2"},
	"TripleCLIPLoader":       {"clip_name1", "clip_name2", "clip_name3"},
	"UNETLoader":             {"unet_name"},
	"CLIPLoaderGGUF":         {"clip_name"},
	"DualCLIPLoaderGGUF":     {"clip_name1", "clip_name2"},
	"TripleCLIPLoaderGGUF":   {"clip_name1", "clip_name2", "clip_name3"},
	"UnetLoaderGGUF":         {"unet_name"},
	"UnetLoaderGGUFAdvanced": {"unet_name"},
	"ControlNetLoader":       {"control_net_name"},
	"DiffControlNetLoader":   {"control_net_name"},
	"unCLIPCheckpointLoader": {"ckpt_name"},
	"CLIPVisionLoader":       {"clip_name"},
	"StyleModelLoader":       {"style_model_name"},
	"GLIGENLoader":           {"gligen_name"},
	"CheckpointLoader":       {"config_name", "ckpt_name"},
	"HypernetworkLoader":     {"hypernetwork_name"},
	"DiffusersLoader":        {"model_path"},
}

// fromSource are the object_info entries of classes the reference lacks because an
// optional Python package was missing there (kornia for Canny and the morphology nodes,
// spandrel for the upscale models), written from ComfyUI 0.3.64's own source (the
// modules' define_schema) in the form io.Schema serialises.
var fromSource = map[string]string{
	"Canny": `{"api_node": false, "category": "image/preprocessors", "deprecated": false, "description": "",
		"display_name": null, "experimental": false,
		"input": {"required": {"image": ["IMAGE", {}],
			"low_threshold": ["FLOAT", {"default": 0.4, "max": 0.99, "min": 0.01, "step": 0.01}],
			"high_threshold": ["FLOAT", {"default": 0.8, "max": 0.99, "min": 0.01, "step": 0.01}]}},
		"input_order": {"required": ["image", "low_threshold", "high_threshold"]}, "name": "Canny",
		"output": ["IMAGE"], "output_is_list": [false], "output_name": ["IMAGE"], "output_node": false,
		"output_tooltips": [null], "python_module": "comfy_extras.nodes_canny"}`,
	// spandrel (comfy_extras/nodes_upscale_model.py)
	"UpscaleModelLoader": `{"api_node": false, "category": "loaders", "deprecated": false, "description": "",
		"display_name": "Load Upscale Model", "experimental": false,
		"input": {"required": {"model_name": ["COMBO", {"multiselect": false, "options": []}]}},
		"input_order": {"required": ["model_name"]}, "name": "UpscaleModelLoader",
		"output": ["UPSCALE_MODEL"], "output_is_list": [false], "output_name": ["UPSCALE_MODEL"], "output_node": false,
		"output_tooltips": [null], "python_module": "comfy_extras.nodes_upscale_model"}`,
	"ImageUpscaleWithModel": `{"api_node": false, "category": "image/upscaling", "deprecated": false, "description": "",
		"display_name": "Upscale Image (using Model)", "experimental": false,
		"input": {"required": {"upscale_model": ["UPSCALE_MODEL", {}], "image": ["IMAGE", {}]}},
		"input_order": {"required": ["upscale_model", "image"]}, "name": "ImageUpscaleWithModel",
		"output": ["IMAGE"], "output_is_list": [false], "output_name": ["IMAGE"], "output_node": false,
		"output_tooltips": [null], "python_module": "comfy_extras.nodes_upscale_model"}`,
	// kornia (comfy_extras/nodes_morphology.py)
	"Morphology": `{"api_node": false, "category": "image/postprocessing", "deprecated": false, "description": "",
		"display_name": "ImageMorphology", "experimental": false,
		"input": {"required": {"image": ["IMAGE", {}],
			"operation": ["COMBO", {"multiselect": false, "options": ["erode", "dilate", "open", "close", "gradient", "bottom_hat", "top_hat"]}],
			"kernel_size": ["INT", {"default": 3, "min": 3, "max": 999, "step": 1}]}},
		"input_order": {"required": ["image", "operation", "kernel_size"]}, "name": "Morphology",
		"output": ["IMAGE"], "output_is_list": [false], "output_name": ["IMAGE"], "output_node": false,
		"output_tooltips": [null], "python_module": "comfy_extras.nodes_morphology"}`,
	"ImageRGBToYUV": `{"api_node": false, "category": "image/batch", "deprecated": false, "description": "",
		"display_name": null, "experimental": false,
		"input": {"required": {"image": ["IMAGE", {}]}},
		"input_order": {"required": ["image"]}, "name": "ImageRGBToYUV",
		"output": ["IMAGE", "IMAGE", "IMAGE"], "output_is_list": [false, false, false], "output_name": ["Y", "U", "V"], "output_node": false,
		"output_tooltips": [null, null, null], "python_module": "comfy_extras.nodes_morphology"}`,
	"ImageYUVToRGB": `{"api_node": false, "category": "image/batch", "deprecated": false, "description": "",
		"display_name": null, "experimental": false,
		"input": {"required": {"Y": ["IMAGE", {}], "U": ["IMAGE", {}], "V": ["IMAGE", {}]}},
		"input_order": {"required": ["Y", "U", "V"]}, "name": "ImageYUVToRGB",
		"output": ["IMAGE"], "output_is_list": [false], "output_name": ["IMAGE"], "output_node": false,
		"output_tooltips": [null], "python_module": "comfy_extras.nodes_morphology"}`,
}

// wantClasses are the classes issue 2 asks this family to provide.
var wantClasses = []string{
	"LoadImage", "LoadImageMask", "SaveImage", "PreviewImage", "EmptyImage", "ImageScale",
	"ImageScaleBy", "ImageInvert", "ImageBatch", "ImageCrop", "ImagePadForOutpaint",
	"ImageBlend", "ImageBlur", "ImageSharpen", "ImageToMask", "MaskToImage", "SolidMask",
	"InvertMask", "PrimitiveInt", "PrimitiveFloat", "PrimitiveString",
	"PrimitiveStringMultiline", "PrimitiveBoolean",
	"LoraLoader", "LoraLoaderModelOnly",
}

func newTestRegistry(t *testing.T, opts Options) *nodes.Registry {
	t.Helper()
	r := nodes.NewRegistry()
	if err := Register(r, opts); err != nil {
		t.Fatal(err)
	}
	return r
}

// roundTrip returns v as encoding/json would hand it to a client and back.
func roundTrip(t *testing.T, v any) any {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// blankCombo replaces the choices of a classic combo input with a marker, keeping its form
// ([[...], {opts}]).
func blankCombo(t *testing.T, entry any, input string) {
	t.Helper()
	req := entry.(map[string]any)["input"].(map[string]any)["required"].(map[string]any)
	spec, ok := req[input].([]any)
	if !ok || len(spec) == 0 {
		t.Fatalf("input %q: spec %v is not a list", input, req[input])
	}
	if spec[0] == "COMBO" && len(spec) == 2 {
		// io.Combo: ["COMBO", {"options": [...], …}]
		spec[1].(map[string]any)["options"] = "<files>"
		return
	}
	if _, ok := spec[0].([]any); !ok {
		t.Fatalf("input %q: first element %v is not a choice list", input, spec[0])
	}
	spec[0] = "<files>"
}

func TestSchemasMatchComfyUI(t *testing.T) {
	ref := filepath.Join(testenv.ReferenceDir(t), "comfyui-0.3.64-object_info.json")
	data, err := os.ReadFile(ref)
	if err != nil {
		t.Fatal(err)
	}
	var reference map[string]any
	if err := json.Unmarshal(data, &reference); err != nil {
		t.Fatal(err)
	}
	for name, entry := range fromSource {
		if _, ok := reference[name]; ok {
			t.Fatalf("%s is in the reference now: drop it from fromSource", name)
		}
		var v any
		if err := json.Unmarshal([]byte(entry), &v); err != nil {
			t.Fatalf("fromSource %s: %v", name, err)
		}
		reference[name] = v
	}
	in := t.TempDir()
	for _, f := range []string{"b.png", "a.jpg", "notes.txt"} {
		if err := os.WriteFile(filepath.Join(in, f), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r := newTestRegistry(t, Options{Dirs: nodes.Dirs{Input: in}})
	for _, name := range wantClasses {
		if _, err := r.Lookup(name); err != nil {
			t.Errorf("class %s is not registered", name)
		}
	}
	for _, name := range r.Names() {
		t.Run(name, func(t *testing.T) {
			want, ok := reference[name]
			if !ok {
				t.Fatalf("%s is not a ComfyUI 0.3.64 class", name)
			}
			n, _ := r.Lookup(name)
			got := roundTrip(t, n.Schema().ObjectInfo())
			want = roundTrip(t, want)
			for _, input := range fileCombos[name] {
				blankCombo(t, got, input)
				blankCombo(t, want, input)
				// Their validation is the node's own (ComfyUI's VALIDATE_INPUTS).
				if in, _ := n.Schema().Input(input); !in.CustomValidation {
					t.Errorf("input %q is not marked CustomValidation", input)
				}
			}
			for _, input := range modelCombos[name] {
				blankCombo(t, got, input)
				blankCombo(t, want, input)
			}
			if !reflect.DeepEqual(got, want) {
				g, _ := json.MarshalIndent(got, "", " ")
				w, _ := json.MarshalIndent(want, "", " ")
				t.Errorf("object_info differs\n got: %s\nwant: %s", g, w)
			}
		})
	}
}

func TestLoadImageChoicesListFiles(t *testing.T) {
	in := t.TempDir()
	for _, f := range []string{"b.png", "a.JPG", "notes.txt", "sub/c.webp", ".hidden.png", ".cache/d.png"} {
		p := filepath.Join(in, filepath.FromSlash(f))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r := newTestRegistry(t, Options{Dirs: nodes.Dirs{Input: in}})
	tests := []struct {
		class string
		want  []string
	}{
		{"LoadImage", []string{"a.JPG", "b.png", "sub/c.webp"}},
		{"LoadImageMask", []string{"a.JPG", "b.png", "notes.txt", "sub/c.webp"}},
	}
	for _, tc := range tests {
		t.Run(tc.class, func(t *testing.T) {
			s, _ := r.Schema(tc.class)
			in, _ := s.Input("image")
			if got := in.Choices(); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("choices = %q, want %q", got, tc.want)
			}
		})
	}
}
