package builtin

import (
	"bytes"
	"encoding/json"
	"errors"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

var fixedNow = time.Date(2026, 11, 25, 7, 8, 9, 0, time.Local)

func saveOpts(t *testing.T) (Options, nodes.Dirs) {
	t.Helper()
	base := t.TempDir()
	d := nodes.Dirs{Output: filepath.Join(base, "output"), Input: filepath.Join(base, "input"), Temp: filepath.Join(base, "temp")}
	return Options{Dirs: d, Now: func() time.Time { return fixedNow }}, d
}

// uiImages returns the UI "images" list of a saver result.
func uiImages(t *testing.T, res nodes.Result) []map[string]any {
	t.Helper()
	list, ok := res.UI["images"].([]any)
	if !ok {
		t.Fatalf("UI = %#v, want an images list", res.UI)
	}
	out := make([]map[string]any, len(list))
	for i, v := range list {
		out[i] = v.(map[string]any)
	}
	return out
}

func filenames(t *testing.T, res nodes.Result) []string {
	var names []string
	for _, im := range uiImages(t, res) {
		names = append(names, im["filename"].(string))
	}
	return names
}

func TestSaveImageCounters(t *testing.T) {
	opts, dirs := saveOpts(t)
	two := ramp(2, 2, 3, 3)
	save := func(prefix string) nodes.Result {
		t.Helper()
		res, err := run(t, opts, nil, "SaveImage", nodes.Inputs{"images": two, "filename_prefix": prefix})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	if got, want := filenames(t, save("ComfyUI")), []string{"ComfyUI_00001_.png", "ComfyUI_00002_.png"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("first save: %q, want %q", got, want)
	}
	if got, want := filenames(t, save("ComfyUI")), []string{"ComfyUI_00003_.png", "ComfyUI_00004_.png"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("second save: %q, want %q", got, want)
	}
	// Files of other prefixes, and names that do not parse, do not move the counter;
	// a gap continues after the highest number.
	for _, f := range []string{"ComfyUI_00041_.png", "ComfyUIx_00099_.png", "Other_00500_.png", "ComfyUI_abc_.png"} {
		if err := os.WriteFile(filepath.Join(dirs.Output, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := filenames(t, save("ComfyUI")), []string{"ComfyUI_00042_.png", "ComfyUI_00043_.png"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("after gap: %q, want %q", got, want)
	}
	if got, want := filenames(t, save("Other")), []string{"Other_00501_.png", "Other_00502_.png"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("other prefix: %q, want %q", got, want)
	}
}

func TestNextCounter(t *testing.T) {
	tests := []struct {
		name    string
		entries []string
		stem    string
		want    int
	}{
		{"empty", nil, "ComfyUI", 1},
		{"highest plus one", []string{"a_00002_.png", "a_00010_.png", "a_00003_.png"}, "a", 11},
		{"prefix must be followed by _", []string{"ab_00005_.png"}, "a", 1},
		{"unparsable counts as 0", []string{"a_x_.png"}, "a", 1},
		{"non-ASCII prefix sliced by characters", []string{"café_00007_.png"}, "café", 8},
		{"directory entries count too", []string{"a_00004_"}, "a", 5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := nextCounter(tc.entries, tc.stem, len([]rune(tc.stem))); got != tc.want {
				t.Errorf("nextCounter = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestSaveImagePrefixes(t *testing.T) {
	prompt := graph.Prompt{
		"3":  {ClassType: "KSampler", Inputs: map[string]any{"seed": json.Number("42"), "model": []any{"4", json.Number("0")}}},
		"5":  {ClassType: "EmptyLatentImage", Inputs: map[string]any{"width": json.Number("512")}, Meta: &graph.Meta{Title: "Empty Latent Image"}},
		"7":  {ClassType: "CLIPTextEncode", Inputs: map[string]any{"text": "a/b:c"}, Meta: &graph.Meta{Title: "Positive"}},
		"10": {ClassType: "KSampler", Inputs: map[string]any{"seed": json.Number("7")}},
	}
	tests := []struct {
		prefix    string
		subfolder string
		file      string
	}{
		{"ComfyUI", "", "ComfyUI_00001_.png"},
		{"sub/dir/img", "sub/dir", "img_00001_.png"},
		{"%date:yyyy-MM-dd%/x", "2026-11-25", "x_00001_.png"},
		// A date token holding dots splits into more than two parts: the front end formats
		// only the part before the first dot; with exactly one dot it is taken for a
		// Node.widget token and left alone.
		{"run_%date:yy-M-d_hh.mm.ss%", "", "run_26-11-25_07_00001_.png"},
		{"%date:hh.mm%", "", "%date:hh.mm%_00001_.png"},
		{"%year%%month%%day%_%hour%%minute%%second%", "", "20261125_070809_00001_.png"},
		{"img_%width%x%height%", "", "img_3x2_00001_.png"},
		{"seed_%KSampler.seed%", "", "seed_42_00001_.png"},                            // class first, lowest id
		{"w_%Empty Latent Image.width%", "", "w_512_00001_.png"},                      // by title
		{"t_%Positive.text%", "", "t_a_b_c_00001_.png"},                               // / and : replaced
		{"m_%KSampler.model%_%Nope.x%", "", "m_%KSampler.model%_%Nope.x%_00001_.png"}, // links and unknown nodes stay
		{"b%batch_num%", "", "b0_00001_.png"},
		{"a/./b//c", "a/b", "c_00001_.png"},
		{"a/../b", "", "b_00001_.png"},
	}
	for _, tc := range tests {
		t.Run(tc.prefix, func(t *testing.T) {
			opts, dirs := saveOpts(t)
			env := &nodes.Env{Prompt: prompt}
			res, err := run(t, opts, env, "SaveImage", nodes.Inputs{"images": ramp(1, 2, 3, 3), "filename_prefix": tc.prefix})
			if err != nil {
				t.Fatal(err)
			}
			got := uiImages(t, res)
			want := []map[string]any{{"filename": tc.file, "subfolder": tc.subfolder, "type": "output"}}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("UI images = %v, want %v", got, want)
			}
			if _, err := os.Stat(filepath.Join(dirs.Output, filepath.FromSlash(tc.subfolder), tc.file)); err != nil {
				t.Fatalf("file not written: %v", err)
			}
		})
	}
}

func TestSaveImageRefusesTraversal(t *testing.T) {
	opts, dirs := saveOpts(t)
	outside := filepath.Join(filepath.Dir(dirs.Output), "outside")
	if err := os.MkdirAll(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dirs.Output, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dirs.Output, "link")); err != nil {
		t.Fatal(err)
	}
	for _, prefix := range []string{"../outside/x", "/tmp/x", "a/../../outside/x", "../../../../etc/x", "link/x", "%date:yyyy%/../../outside/x"} {
		t.Run(prefix, func(t *testing.T) {
			_, err := run(t, opts, nil, "SaveImage", nodes.Inputs{"images": ramp(1, 2, 2, 3), "filename_prefix": prefix})
			if err == nil {
				t.Fatal("no error")
			}
			entries, _ := os.ReadDir(outside)
			if len(entries) != 0 {
				t.Fatalf("wrote %d files outside the output folder", len(entries))
			}
		})
	}
	if _, err := os.Stat("/tmp/x_00001_.png"); err == nil {
		t.Error("/tmp/x_00001_.png exists")
	}
}

func TestSaveImagePixelsAndMetadata(t *testing.T) {
	opts, dirs := saveOpts(t)
	var prompt graph.Prompt
	dec := json.NewDecoder(strings.NewReader(`{"9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "café ✓", "images": ["8", 0]}, "_meta": {"title": "Save Image"}},
		"3": {"class_type": "KSampler", "inputs": {"seed": 18446744073709551615, "cfg": 7.5}}}`))
	dec.UseNumber()
	if err := dec.Decode(&prompt); err != nil {
		t.Fatal(err)
	}
	workflow := map[string]any{"last_node_id": 9.0, "nodes": []any{map[string]any{"id": 9.0, "type": "SaveImage", "title": "😀"}}, "version": 0.4}
	env := &nodes.Env{Prompt: prompt, ExtraPNGInfo: map[string]any{"workflow": workflow}}
	src := img(1, 1, 4, 4,
		0, 0.5, 1, 1,
		-0.2, 1.3, 0.999, 0.5,
		0.0039, 0.0040, 0.5, 0,
		0.2, 0.4, 0.6, 0.8)
	res, err := run(t, opts, env, "SaveImage", nodes.Inputs{"images": src, "filename_prefix": "meta"})
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dirs.Output, filenames(t, res)[0]))
	if err != nil {
		t.Fatal(err)
	}
	decoded, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	// np.clip(255*v, 0, 255).astype(uint8) truncates.
	want := [][4]uint8{{0, 127, 255, 255}, {0, 255, 254, 127}, {0, 1, 127, 0}, {51, 102, 153, 204}}
	nrgba, ok := decoded.(*image.NRGBA)
	if !ok {
		t.Fatalf("decoded %T, want an RGBA PNG", decoded)
	}
	for x, w := range want {
		var got [4]uint8
		copy(got[:], nrgba.Pix[4*x:4*x+4])
		if got != w {
			t.Errorf("pixel %d = %v, want %v", x, got, w)
		}
	}
	chunks, err := graph.ReadPNGText(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if len(chunks) != 2 || chunks[0].Keyword != "prompt" || chunks[1].Keyword != "workflow" {
		t.Fatalf("chunks = %v, want prompt then workflow", chunks)
	}
	text, _ := graph.PNGText(chunks, "prompt")
	if !strings.Contains(text, `"caf\u00e9 \u2713"`) || !strings.Contains(text, `"seed": 18446744073709551615`) {
		t.Errorf("prompt chunk is not json.dumps-shaped: %s", text)
	}
	var gotPrompt, wantPrompt any
	mustJSON(t, text, &gotPrompt)
	raw, _ := json.Marshal(prompt)
	mustJSON(t, string(raw), &wantPrompt)
	if !reflect.DeepEqual(gotPrompt, wantPrompt) {
		t.Errorf("prompt round trip:\n got %v\nwant %v", gotPrompt, wantPrompt)
	}
	wtext, _ := graph.PNGText(chunks, "workflow")
	var gotWorkflow any
	mustJSON(t, wtext, &gotWorkflow)
	var wantWorkflow any
	raw, _ = json.Marshal(workflow)
	mustJSON(t, string(raw), &wantWorkflow)
	if !reflect.DeepEqual(gotWorkflow, wantWorkflow) {
		t.Errorf("workflow round trip:\n got %v\nwant %v", gotWorkflow, workflow)
	}
	if !strings.Contains(wtext, `\ud83d\ude00`) {
		t.Errorf("workflow chunk does not escape the emoji as a surrogate pair: %s", wtext)
	}

	t.Run("disabled", func(t *testing.T) {
		env := &nodes.Env{Prompt: prompt, ExtraPNGInfo: map[string]any{"workflow": workflow}, DisableMetadata: true}
		res, err := run(t, opts, env, "SaveImage", nodes.Inputs{"images": src, "filename_prefix": "plain"})
		if err != nil {
			t.Fatal(err)
		}
		data, _ := os.ReadFile(filepath.Join(dirs.Output, filenames(t, res)[0]))
		chunks, err := graph.ReadPNGText(bytes.NewReader(data))
		if err != nil || len(chunks) != 0 {
			t.Fatalf("chunks = %v, err %v; want none", chunks, err)
		}
	})
}

func mustJSON(t *testing.T, s string, v any) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("bad JSON %q: %v", s, err)
	}
}

func TestPreviewImage(t *testing.T) {
	opts, dirs := saveOpts(t)
	res, err := run(t, opts, nil, "PreviewImage", nodes.Inputs{"images": ramp(2, 2, 2, 3)})
	if err != nil {
		t.Fatal(err)
	}
	imgs := uiImages(t, res)
	if len(imgs) != 2 {
		t.Fatalf("%d images, want 2", len(imgs))
	}
	re := regexp.MustCompile(`^ComfyUI_temp_[a-z]{5}_0000[12]_\.png$`)
	for _, im := range imgs {
		if !re.MatchString(im["filename"].(string)) || im["type"] != "temp" || im["subfolder"] != "" {
			t.Errorf("preview entry %v", im)
		}
		if strings.ContainsRune(im["filename"].(string)[len("ComfyUI_temp_"):][:5], 'w') {
			t.Errorf("suffix uses 'w', which ComfyUI's alphabet lacks")
		}
		if _, err := os.Stat(filepath.Join(dirs.Temp, im["filename"].(string))); err != nil {
			t.Error(err)
		}
	}
	if _, err := os.Stat(dirs.Output); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("preview touched the output folder: %v", err)
	}
}

func TestSaveImageChannelCounts(t *testing.T) {
	opts, dirs := saveOpts(t)
	for _, c := range []int{1, 2, 3, 4} {
		res, err := run(t, opts, nil, "SaveImage", nodes.Inputs{"images": filled(1, 2, 2, c, 1), "filename_prefix": "c"})
		if err != nil {
			t.Fatalf("%d channels: %v", c, err)
		}
		f, _ := os.Open(filepath.Join(dirs.Output, filenames(t, res)[0]))
		cfg, err := png.DecodeConfig(f)
		f.Close()
		if err != nil || cfg.Width != 2 || cfg.Height != 2 {
			t.Fatalf("%d channels: config %v, %v", c, cfg, err)
		}
	}
	_, err := run(t, opts, nil, "SaveImage", nodes.Inputs{"images": filled(1, 2, 2, 5, 1), "filename_prefix": "c"})
	wantErr(t, err, "5 channels")
}

func TestPyJSONDumps(t *testing.T) {
	tests := []struct {
		in   any
		want string
	}{
		{map[string]any{"b": []any{1, "x"}, "a": map[string]any{}}, `{"a": {}, "b": [1, "x"]}`},
		{"é ✓ 😀 <&> \x7f \n", `"\u00e9 \u2713 \ud83d\ude00 <&> \u007f \n"`},
		{map[string]any{"k:,": "v, w: x"}, `{"k:,": "v, w: x"}`},
		{json.Number("1.50"), `1.50`},
	}
	for _, tc := range tests {
		got, err := pyJSONDumps(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("pyJSONDumps(%v) = %s, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}

func TestJSString(t *testing.T) {
	tests := []struct {
		in   any
		want string
	}{
		{1.0, "1"}, {0.1, "0.1"}, {-2.5, "-2.5"}, {1e21, "1e+21"}, {123456789012345680000.0, "123456789012345680000"},
		{1.5e-7, "1.5e-7"}, {0.000001, "0.000001"}, {json.Number("18446744073709551615"), "18446744073709551615"},
		{json.Number("42"), "42"}, {json.Number("7.50"), "7.5"}, {true, "true"}, {nil, ""}, {int64(-3), "-3"},
	}
	for _, tc := range tests {
		if got := jsString(tc.in); got != tc.want {
			t.Errorf("jsString(%#v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestFormatDate(t *testing.T) {
	tm := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	tests := map[string]string{
		"yyyy-MM-dd": "2026-03-04",
		"yy/M/d":     "26/3/4",
		"hh:mm:ss":   "05:06:07",
		"h-m-s":      "5-6-7",
		"yyy y":      "yyy y",
		"ddd":        "044",
		"text_x":     "text_x",
		"yyyyyMMMM":  "2026y0303",
		"":           "",
	}
	for in, want := range tests {
		if got := formatDate(in, tm); got != want {
			t.Errorf("formatDate(%q) = %q, want %q", in, got, want)
		}
	}
}

// Concurrent saves with one prefix never overwrite each other: a taken name moves the
// counter on (O_EXCL), where ComfyUI would overwrite.
func TestSaveImageConcurrent(t *testing.T) {
	opts, dirs := saveOpts(t)
	r := newTestRegistry(t, opts)
	n, _ := r.Lookup("SaveImage")
	const workers = 8
	names := make(chan string, workers)
	errs := make(chan error, workers)
	for i := 0; i < workers; i++ {
		go func() {
			res, err := n.Run(t.Context(), &nodes.Env{}, nodes.Inputs{"images": ramp(1, 2, 2, 3), "filename_prefix": "race"})
			if err != nil {
				errs <- err
				return
			}
			names <- res.UI["images"].([]any)[0].(map[string]any)["filename"].(string)
		}()
	}
	seen := map[string]bool{}
	for i := 0; i < workers; i++ {
		select {
		case err := <-errs:
			t.Fatal(err)
		case name := <-names:
			if seen[name] {
				t.Fatalf("two saves wrote %s", name)
			}
			seen[name] = true
		}
	}
	entries, err := os.ReadDir(dirs.Output)
	if err != nil || len(entries) != workers {
		t.Fatalf("%d files in the output folder (%v), want %d", len(entries), err, workers)
	}
}
