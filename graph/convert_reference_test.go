package graph

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/internal/testenv"
)

type manifestEntry struct {
	File       string `json:"file"`
	PromptFile string `json:"prompt_file"`
	HasPrompt  bool   `json:"has_prompt"`
}

func readManifest(t *testing.T) (string, []manifestEntry) {
	t.Helper()
	dir := filepath.Join(testenv.ReferenceDir(t), "workflows")
	data, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m []manifestEntry
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	if len(m) != 36 {
		t.Fatalf("manifest lists %d workflows, want 36", len(m))
	}
	return dir, m
}

// TestConvertReference converts each of ComfyUI's 36 reference workflows with the
// reference schemas and compares the result with the prompt ComfyUI's front end queued:
// same node ids, class types and inputs. Inputs the old front end did not queue (the
// schema has grown since) must hold their schema default; queued keys that are not
// schema inputs (the old "upload" button value) are not part of today's prompt.
func TestConvertReference(t *testing.T) {
	schemas := referenceSchemas(t)
	dir, entries := readManifest(t)
	compared := 0
	for _, e := range entries {
		t.Run(strings.TrimSuffix(e.File, ".workflow.json"), func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(dir, e.File))
			if err != nil {
				t.Fatal(err)
			}
			doc, err := Load(data)
			if err != nil {
				t.Fatal(err)
			}
			if doc.Format != FormatUI {
				t.Fatalf("format = %v, want ui", doc.Format)
			}
			// Decoding and encoding the workflow loses nothing.
			again, err := json.Marshal(doc.Workflow)
			if err != nil {
				t.Fatal(err)
			}
			if !sameJSON(t, data, again) {
				t.Errorf("workflow does not round-trip")
			}
			got, err := ConvertWith(doc.Workflow, schemas, ConvertOptions{ChooseDynamic: func(int) int { return 0 }})
			var mt *MissingTypesError
			if errors.As(err, &mt) {
				// The reference object_info comes from one ComfyUI install, which lacks
				// some optional node packs: the error must name exactly the node types
				// of this workflow that it does not know.
				checkMissing(t, doc.Workflow, schemas, mt)
				return
			}
			if err != nil {
				t.Fatalf("convert: %v", err)
			}
			if !e.HasPrompt {
				return
			}
			pdata, err := os.ReadFile(filepath.Join(dir, e.PromptFile))
			if err != nil {
				t.Fatal(err)
			}
			want, err := ParsePrompt(pdata)
			if err != nil {
				t.Fatal(err)
			}
			compared++
			// The same pair carried in a PNG, as ComfyUI saves it, loads back to the
			// same prompt and workflow.
			png, err := InsertPNGText(tinyPNG(t), []TextChunk{{"prompt", string(pdata)}, {"workflow", string(data)}})
			if err != nil {
				t.Fatal(err)
			}
			fromPNG, err := Load(png)
			if err != nil {
				t.Fatal(err)
			}
			if fromPNG.Format != FormatPNG || fromPNG.Prompt == nil || fromPNG.Workflow == nil {
				t.Fatalf("png document = %+v", fromPNG)
			}
			if d := comparePrompts(fromPNG.Prompt, want, schemas); len(d) > 0 {
				t.Errorf("prompt from png differs: %v", d)
			}
			wb, _ := json.Marshal(fromPNG.Workflow)
			if !sameJSON(t, data, wb) {
				t.Errorf("workflow from png differs")
			}
			for _, d := range comparePrompts(got, want, schemas) {
				t.Error(d)
			}
		})
	}
	// Most pairs must be compared in full, not skipped for missing types.
	if compared < 25 {
		t.Errorf("only %d workflow/prompt pairs were compared", compared)
	}
	t.Logf("%d workflow/prompt pairs converted and compared", compared)
}

// checkMissing verifies a MissingTypesError against the workflow's own node types.
func checkMissing(t *testing.T, w *Workflow, schemas Schemas, mt *MissingTypesError) {
	t.Helper()
	want := map[string]bool{}
	for _, n := range w.Nodes {
		if _, ok := schemas.Schema(n.Type); !ok && !virtualTypes[n.Type] && !strings.HasPrefix(n.Type, "workflow") {
			want[n.Type] = true
		}
	}
	if len(mt.Types) != len(want) {
		t.Errorf("missing types = %v, want %v", mt.Types, want)
	}
	for _, typ := range mt.Types {
		if !want[typ] {
			t.Errorf("missing type %q is not a missing type of the workflow", typ)
		}
		if len(mt.Nodes[typ]) == 0 {
			t.Errorf("missing type %q: no node ids", typ)
		}
		if !strings.Contains(mt.Error(), typ) {
			t.Errorf("error %q does not name %q", mt, typ)
		}
	}
	t.Logf("not compared: %v", mt)
}

// comparePrompts lists the differences between a converted prompt and ComfyUI's.
func comparePrompts(got, want Prompt, schemas Schemas) []string {
	var diffs []string
	for _, id := range SortedIDs(want) {
		if got[id] == nil {
			diffs = append(diffs, fmt.Sprintf("node %s (%s) missing", id, want[id].ClassType))
		}
	}
	for _, id := range SortedIDs(got) {
		g, w := got[id], want[id]
		if w == nil {
			diffs = append(diffs, fmt.Sprintf("extra node %s (%s)", id, g.ClassType))
			continue
		}
		if g.ClassType != w.ClassType {
			diffs = append(diffs, fmt.Sprintf("node %s: class %s, want %s", id, g.ClassType, w.ClassType))
			continue
		}
		if w.Meta != nil && (g.Meta == nil || g.Meta.Title != w.Meta.Title) {
			diffs = append(diffs, fmt.Sprintf("node %s: _meta %+v, want title %q", id, g.Meta, w.Meta.Title))
		}
		s, _ := schemas.Schema(g.ClassType)
		keys := map[string]bool{}
		for k := range g.Inputs {
			keys[k] = true
		}
		for k := range w.Inputs {
			if _, isInput := s.Input(k); isInput {
				keys[k] = true
			}
		}
		var names []string
		for k := range keys {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			gv, gok := g.Inputs[k]
			wv, wok := w.Inputs[k]
			if !wok {
				in, _ := s.Input(k)
				if in == nil {
					diffs = append(diffs, fmt.Sprintf("node %s (%s): input %q is not in the schema", id, g.ClassType, k))
					continue
				}
				def, hasDef := widgetDefault(in)
				if !hasDef || !sameValue(gv, def) {
					diffs = append(diffs, fmt.Sprintf("node %s (%s): input %q = %v, absent from the reference and not the schema default", id, g.ClassType, k, gv))
				}
				continue
			}
			if !gok {
				diffs = append(diffs, fmt.Sprintf("node %s (%s): input %q missing, want %v", id, g.ClassType, k, wv))
				continue
			}
			if !sameValue(gv, wv) {
				diffs = append(diffs, fmt.Sprintf("node %s (%s): input %q = %v, want %v", id, g.ClassType, k, gv, wv))
			}
		}
	}
	return diffs
}

// sameValue compares prompt values: links by target, numbers by value (1 == 1.0).
func sameValue(a, b any) bool {
	if la, ok := AsLink(a); ok {
		lb, ok := AsLink(b)
		return ok && la == lb
	}
	na, aNum := a.(json.Number)
	nb, bNum := b.(json.Number)
	if aNum && bNum {
		ra, ok1 := new(big.Rat).SetString(na.String())
		rb, ok2 := new(big.Rat).SetString(nb.String())
		return ok1 && ok2 && ra.Cmp(rb) == 0
	}
	return reflect.DeepEqual(a, b)
}

func readFile(dir, name string) ([]byte, error) { return os.ReadFile(filepath.Join(dir, name)) }
