package testenv

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// renamedCopy copies the golden set src into dst with every case file, and the
// tokenizer family's data files, under a new name, and rewrites every string that names
// one: the manifests' file fields and anything else in them (a LoRA's base fixture
// "unet/<file>", a sidecar's gguf_file), and the __metadata__ of a safetensors file that
// names one (its sha256 and size in the manifest follow). Files are renamed to
// "<family>-<n>.dat", so neither the old names nor the extensions survive. It returns
// the renames, "family/old" → new name.
func renamedCopy(t testing.TB, src, dst string) map[string]string {
	t.Helper()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	renames := map[string]string{}
	manifests := map[string][]byte{}
	for _, e := range ents {
		if !e.IsDir() {
			copyFile(t, filepath.Join(src, e.Name()), filepath.Join(dst, e.Name()))
			continue
		}
		fam := e.Name()
		data, err := os.ReadFile(filepath.Join(src, fam, "manifest.json"))
		if errors.Is(err, fs.ErrNotExist) {
			continue // not a family folder
		}
		if err != nil {
			t.Fatal(err)
		}
		manifests[fam] = data
		raws, err := readManifest(filepath.Join(src, fam))
		if err != nil {
			t.Fatalf("%s: %v", fam, err)
		}
		for _, raw := range raws {
			var c struct {
				File string `json:"file"`
			}
			if err := json.Unmarshal(raw, &c); err != nil || c.File == "" {
				t.Fatalf("%s: a case without a file", fam)
			}
			renames[fam+"/"+c.File] = fmt.Sprintf("%s-%d.dat", fam, len(renames))
		}
		files, err := os.ReadDir(filepath.Join(src, fam))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			kind, err := vocabKind(filepath.Join(src, fam, f.Name()))
			if err != nil {
				t.Fatal(err)
			}
			if _, named := renames[fam+"/"+f.Name()]; kind != "" && !named {
				renames[fam+"/"+f.Name()] = fmt.Sprintf("%s-%s-%d.dat", fam, kind, len(renames))
			}
		}
	}
	for fam, data := range manifests {
		if err := os.MkdirAll(filepath.Join(dst, fam), 0o755); err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := decodeNumbers(string(data), &m); err != nil {
			t.Fatalf("%s: %v", fam, err)
		}
		m = renameStrings(m, fam, renames).(map[string]any)
		files, err := os.ReadDir(filepath.Join(src, fam))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if f.Name() == "manifest.json" {
				continue
			}
			name := f.Name()
			if n, ok := renames[fam+"/"+name]; ok {
				name = n
			}
			copyFile(t, filepath.Join(src, fam, f.Name()), filepath.Join(dst, fam, name))
		}
		for _, c := range m["cases"].([]any) {
			c := c.(map[string]any)
			path := filepath.Join(dst, fam, c["file"].(string))
			if rewriteMetadata(t, path, fam, renames) {
				sum, size := fileSum(t, path)
				c["sha256"], c["bytes"] = sum, json.Number(fmt.Sprint(size))
			}
		}
		out, err := json.MarshalIndent(m, "", " ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, fam, "manifest.json"), out, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return renames
}

// renameStrings rewrites every string in v that names a renamed file: "fam/old"
// anywhere, and a bare old name of its own family.
func renameStrings(v any, fam string, renames map[string]string) any {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			v[k] = renameStrings(x, fam, renames)
		}
	case []any:
		for i, x := range v {
			v[i] = renameStrings(x, fam, renames)
		}
	case string:
		return renameNames(v, fam, renames)
	}
	return v
}

// namePart reports whether b may be part of a file name or path.
func namePart(b byte) bool {
	return b == '_' || b == '-' || b == '+' || b == '.' || b == '/' || b >= '0' && b <= '9' || b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z'
}

// renameNames replaces the names in s that stand alone (a whole run of file-name
// characters, less a trailing full stop): "fam/old" of any family and a bare "old" of
// family fam. A name inside a longer one ("sd15_tiny.x" in "clip_sd15_tiny.x") is not
// touched.
func renameNames(s, fam string, renames map[string]string) string {
	if n, ok := renames[fam+"/"+s]; ok {
		return n // a whole string naming a file of the family, whatever it holds
	}
	var out strings.Builder
	for i := 0; i < len(s); {
		if !namePart(s[i]) {
			out.WriteByte(s[i])
			i++
			continue
		}
		j := i
		for j < len(s) && namePart(s[j]) {
			j++
		}
		run := s[i:j]
		word := strings.TrimRight(run, ".")
		switch n, ok := renames[word]; {
		case ok:
			f, _, _ := strings.Cut(word, "/")
			run = f + "/" + n + run[len(word):]
		default:
			if n, ok := renames[fam+"/"+word]; ok && !strings.Contains(word, "/") {
				run = n + run[len(word):]
			}
		}
		out.WriteString(run)
		i = j
	}
	return out.String()
}

// rewriteMetadata renames the file names in a safetensors file's __metadata__ and
// reports whether it changed the file. Other files are left alone.
func rewriteMetadata(t testing.TB, path, fam string, renames map[string]string) bool {
	t.Helper()
	tensors, meta, size, err := ReadSafetensorsHeader(path)
	if err != nil || meta == nil {
		return false // not a safetensors file (the gguf model file)
	}
	changed := false
	for k, v := range meta {
		var before, after any
		if decodeNumbers(v, &before) != nil || decodeNumbers(v, &after) != nil {
			continue
		}
		after = renameStrings(after, fam, renames)
		if jsonEqual(before, after) {
			continue
		}
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(after); err != nil {
			t.Fatal(err)
		}
		meta[k], changed = strings.TrimSpace(buf.String()), true
	}
	if !changed {
		return false
	}
	hdr := map[string]any{"__metadata__": meta}
	for name, ti := range tensors {
		hdr[name] = ti
	}
	js, err := json.Marshal(hdr)
	if err != nil {
		t.Fatal(err)
	}
	for (8+len(js))%8 != 0 {
		js = append(js, ' ')
	}
	old, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(js)))
	out = append(append(out, js...), old[size:]...)
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return true
}

// decodeNumbers decodes JSON keeping numbers as written (seeds beyond 2^53).
func decodeNumbers(s string, v any) error {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	return dec.Decode(v)
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

func copyFile(t testing.TB, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func fileSum(t testing.TB, path string) (string, int) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:]), len(data)
}

// TestRenamedCopy checks the copy the renamed-set suite runs against: every old name
// is gone from the manifests, every file they name exists and has the sha256 they give,
// and the files that named others name the new files.
func TestRenamedCopy(t *testing.T) {
	if testing.Short() {
		t.Skip("copies the golden set")
	}
	src := GoldenDir(t)
	dst := t.TempDir()
	renames := renamedCopy(t, src, dst)
	t.Setenv("FORGEFLOW_GOLDEN_DIR", dst)
	for _, fam := range GoldenFamilies(t) {
		data, err := os.ReadFile(filepath.Join(dst, fam, "manifest.json"))
		if err != nil {
			t.Fatal(err)
		}
		if names := oldNames(string(data), renames); len(names) > 0 {
			t.Errorf("%s/manifest.json still names %v", fam, names)
		}
		_, cases := GoldenCases[Case](t, fam)
		for _, c := range cases {
			if _, err := os.Stat(filepath.Join(src, fam, c.File)); err == nil {
				t.Errorf("%s: case %s keeps its file name %s", fam, c.Name, c.File)
			}
			if sum, _ := fileSum(t, c.Path()); sum != c.SHA256 {
				t.Errorf("%s: %s: sha256 %s, manifest %s", fam, c.File, sum, c.SHA256)
			}
			_, meta, _, err := ReadSafetensorsHeader(c.Path())
			if names := oldNames(meta["case"], renames); err == nil && len(names) > 0 {
				t.Errorf("%s: %s's metadata still names %v", fam, c.File, names)
			}
		}
	}
	if len(renames) == 0 {
		t.Fatal("nothing renamed")
	}
	if dir := GoldenVocabDir(t); dir == filepath.Join(dst, "tokenizer") {
		t.Error("the tokenizer's data files kept their names")
	}
	rn := map[string]string{"unet/sd15_tiny.safetensors": "X", "gguf/quant_types.gguf": "Y"}
	for _, c := range []struct{ s, fam, want string }{
		{"unet/sd15_tiny.safetensors", "lora", "unet/X"},
		{"clip_sd15_tiny.safetensors", "unet", "clip_sd15_tiny.safetensors"},
		{"sd15_tiny.safetensors", "unet", "X"},
		{"sd15_tiny.safetensors", "lora", "sd15_tiny.safetensors"},
		{"a (+ sd15_tiny.safetensors)", "unet", "a (+ X)"},
		{"from quant_types.gguf.", "gguf", "from Y."},
		{"quant_types.gguf.bak", "gguf", "quant_types.gguf.bak"},
	} {
		if got := renameNames(c.s, c.fam, rn); got != c.want {
			t.Errorf("renameNames(%q, %s) = %q, want %q", c.s, c.fam, got, c.want)
		}
	}
}

// oldNames lists the renamed files' old names that occur in s as whole names.
func oldNames(s string, renames map[string]string) []string {
	runs := map[string]bool{s: true}
	for i := 0; i < len(s); {
		j := i
		for j < len(s) && namePart(s[j]) {
			j++
		}
		if j > i {
			runs[strings.TrimRight(s[i:j], ".")] = true
			i = j
			continue
		}
		i++
	}
	var out []string
	for old := range renames {
		if _, base, _ := strings.Cut(old, "/"); runs[old] || runs[base] {
			out = append(out, old)
		}
	}
	return out
}

// goldenTests finds, in the repository's test files, the tests that read the golden
// set: per package folder, every Test function that reaches a call of testenv.Golden*
// through the functions of its package (by name; over-approximating is harmless). The
// testenv package itself is left out.
func goldenTests(t testing.TB, root string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	fset := token.NewFileSet()
	dirs := map[string][]*ast.File{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "node_modules" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		dirs[filepath.Dir(path)] = append(dirs[filepath.Dir(path)], f)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	self, _ := filepath.Abs(".")
	for dir, files := range dirs {
		if abs, _ := filepath.Abs(dir); abs == self {
			continue
		}
		refs := map[string][]string{} // function name → names it mentions
		reads := map[string]bool{}
		var tests []string
		for _, f := range files {
			for _, decl := range f.Decls {
				fd, ok := decl.(*ast.FuncDecl)
				if !ok || fd.Body == nil {
					continue
				}
				name := fd.Name.Name
				if fd.Recv == nil && strings.HasPrefix(name, "Test") {
					tests = append(tests, name)
				}
				ast.Inspect(fd.Body, func(n ast.Node) bool {
					switch n := n.(type) {
					case *ast.SelectorExpr:
						if x, ok := n.X.(*ast.Ident); ok && x.Name == "testenv" && strings.HasPrefix(n.Sel.Name, "Golden") {
							reads[name] = true
						}
						refs[name] = append(refs[name], n.Sel.Name)
					case *ast.Ident:
						refs[name] = append(refs[name], n.Name)
					}
					return true
				})
			}
		}
		for changed := true; changed; {
			changed = false
			for fn, names := range refs {
				if reads[fn] {
					continue
				}
				for _, n := range names {
					if reads[n] && n != fn {
						reads[fn], changed = true, true
						break
					}
				}
			}
		}
		for _, name := range tests {
			if reads[name] {
				rel, err := filepath.Rel(root, dir)
				if err != nil {
					t.Fatal(err)
				}
				out["./"+filepath.ToSlash(rel)] = append(out["./"+filepath.ToSlash(rel)], name)
			}
		}
	}
	for _, names := range out {
		slices.Sort(names)
	}
	return out
}

// TestGoldenTestDiscovery: the finder sees the golden tests of the families, directly
// and through helpers.
func TestGoldenTestDiscovery(t *testing.T) {
	found := goldenTests(t, RepoRoot(t))
	for pkg, name := range map[string]string{
		"./diffusion/rng":       "TestGoldenBrownian",
		"./diffusion/sampling":  "TestGoldenSchedulers",
		"./diffusion/unet":      "TestGoldenUNet",
		"./weights/gguf":        "TestGoldenQuantize",
		"./gpu/internal/gemm":   "TestGoldenGGUF",
		"./diffusion/sd":        "TestKSampleCFGOneBatch", // through loadTiny
		"./diffusion/clip":      "TestOpenAIVocabularyMatchesHF",
		"./nodes/builtin":       "TestTxt2ImgGraph",
		"./weights/safetensors": "TestGoldenCorpus",
		"./gpu/resample":        "TestGoldenUpscale",
		"./cmd/forgeflow":       "TestSynthAndBench",
		"./diffusion/vae":       "TestGoldenVAE",
		"./weights/detect":      "TestGoldenUNet",
		"./gpu":                 "TestGoldenGGUFLinear",
	} {
		if !slices.Contains(found[pkg], name) {
			t.Errorf("%s: %s not found among %v", pkg, name, found[pkg])
		}
	}
	if slices.Contains(found["./diffusion/sampling"], "TestNewDiscreteSchedules") {
		t.Error("a test that reads no golden file was found")
	}
	if _, ok := found["./internal/testenv"]; ok {
		t.Error("testenv's own tests were included")
	}
}
