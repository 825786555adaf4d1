package testenv

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Case is what every entry of a golden manifest holds (shared/golden/README.md): the
// case name, its file in the family folder, the sha256 of that file, the tolerance and
// the dtype and shape of each in./out. tensor. A test's case type embeds it and adds the
// fields of its family, which it reads from the manifest entry (the same JSON as the
// file's __metadata__["case"]):
//
//	type unetCase struct {
//		testenv.Case
//		Config struct {
//			Wrapper string `json:"wrapper"`
//		} `json:"config"`
//	}
//
// A test never assumes a case name, file name, shape or configuration: it reads them
// from its case, and a field it cannot interpret fails the case with FieldError.
type Case struct {
	Name      string                `json:"case"`
	File      string                `json:"file"`
	SHA256    string                `json:"sha256"`
	Tolerance Tolerance             `json:"tolerance"`
	IO        map[string]TensorSpec `json:"io_tensors"`

	family string
	dir    string
	raw    map[string]json.RawMessage
}

// TensorSpec is the dtype and shape a manifest lists for an in./out. tensor.
type TensorSpec struct {
	DType string `json:"dtype"`
	Shape []int  `json:"shape"`
}

// Numel is the number of elements of the tensor.
func (s TensorSpec) Numel() int {
	n := 1
	for _, d := range s.Shape {
		n *= d
	}
	return n
}

// goldenCase is implemented by every type that embeds Case.
type goldenCase interface{ golden() *Case }

func (c *Case) golden() *Case { return c }

// Family is the name of the family folder the case belongs to.
func (c *Case) Family() string { return c.family }

// Path is the case's file.
func (c *Case) Path() string { return filepath.Join(c.dir, c.File) }

// Dir is the case's family folder.
func (c *Case) Dir() string { return c.dir }

// Has reports whether the manifest entry holds field, a dotted path into the entry's
// JSON ("config.kwargs.width"), with a non-null value.
func (c *Case) Has(field string) bool {
	raw, err := c.lookup(field)
	return err == nil && !bytes.Equal(bytes.TrimSpace(raw), []byte("null"))
}

// Decode decodes field (a dotted path) into v. A missing field or a value of another
// type is an error naming the field.
func (c *Case) Decode(field string, v any) error {
	raw, err := c.lookup(field)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return c.FieldError(field, "%v", err)
	}
	return nil
}

// Raw returns the JSON of field (a dotted path), or an error naming it.
func (c *Case) Raw(field string) (json.RawMessage, error) { return c.lookup(field) }

// FieldError is the error of a field the test cannot interpret: it names the manifest,
// the case and the field.
func (c *Case) FieldError(field, format string, args ...any) error {
	return fmt.Errorf("testenv: %s/manifest.json: case %q: field %s: %s", c.family, c.Name, field, fmt.Sprintf(format, args...))
}

// Tensor returns the manifest's spec of an in./out. tensor, or an error naming the
// io_tensors entry that is missing.
func (c *Case) Tensor(name string) (TensorSpec, error) {
	s, ok := c.IO[name]
	if !ok {
		return TensorSpec{}, c.FieldError("io_tensors", "lists no tensor %q", name)
	}
	return s, nil
}

// Tensors returns the names of the case's in./out. tensors with the prefix, sorted.
func (c *Case) Tensors(prefix string) []string {
	var out []string
	for name := range c.IO {
		if strings.HasPrefix(name, prefix) {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

func (c *Case) lookup(field string) (json.RawMessage, error) {
	obj := c.raw
	parts := strings.Split(field, ".")
	for i, p := range parts {
		raw, ok := obj[p]
		if !ok {
			return nil, c.FieldError(field, "missing")
		}
		if i == len(parts)-1 {
			return raw, nil
		}
		obj = nil
		if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
			return nil, c.FieldError(field, "%s is not an object", strings.Join(parts[:i+1], "."))
		}
	}
	return nil, c.FieldError(field, "empty field name")
}

// Tolerance is a case's {abs, rel}: got passes when |got − want| ≤ abs + rel·|want|.
type Tolerance struct {
	Abs, Rel float64
	given    bool
}

// UnmarshalJSON reads {"abs": a, "rel": r, ...}; both numbers must be there and not
// negative (other keys, notes, are ignored).
func (tol *Tolerance) UnmarshalJSON(b []byte) error {
	var m struct {
		Abs *float64 `json:"abs"`
		Rel *float64 `json:"rel"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("tolerance: %w", err)
	}
	if m.Abs == nil || m.Rel == nil {
		return errors.New("tolerance: needs both abs and rel")
	}
	if !(*m.Abs >= 0) || !(*m.Rel >= 0) {
		return fmt.Errorf("tolerance: abs %v, rel %v: not non-negative numbers", *m.Abs, *m.Rel)
	}
	*tol = Tolerance{Abs: *m.Abs, Rel: *m.Rel, given: true}
	return nil
}

// Given reports whether the case gave a tolerance.
func (tol Tolerance) Given() bool { return tol.given }

// Limit is the largest |got − want| allowed for want.
func (tol Tolerance) Limit(want float64) float64 { return tol.Abs + tol.Rel*math.Abs(want) }

// GoldenCases reads the manifest.json of one golden family (a folder of GoldenDir) into
// cases of the caller's type and returns the family's folder with them. A manifest that
// cannot be read or parsed, that lists no cases, or a case without its "case" and
// "file" names or with a field of the wrong type fails the test, naming the case and the
// field. Where C embeds Case, its methods know the case's family and folder. A set
// without the family folder skips the test (fails it under CI=true), as GoldenDir does.
func GoldenCases[C any](t testing.TB, family string) (string, []C) {
	t.Helper()
	dir := need(t, "FORGEFLOW_GOLDEN_DIR", filepath.Join(GoldenDir(t), family))
	raws, err := readManifest(dir)
	if err != nil {
		t.Fatalf("testenv: %s/manifest.json: %v", family, err)
	}
	cases := make([]C, len(raws))
	for i, raw := range raws {
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(raw, &fields); err != nil {
			t.Fatalf("testenv: %s/manifest.json: case %d: %v", family, i, err)
		}
		var name, file string
		for _, f := range []struct {
			key string
			v   *string
		}{{"case", &name}, {"file", &file}} {
			if err := json.Unmarshal(fields[f.key], f.v); err != nil || *f.v == "" {
				t.Fatalf("testenv: %s/manifest.json: case %d: field %s: missing or not a string", family, i, f.key)
			}
		}
		if filepath.Base(file) != file || file == "." || file == ".." {
			t.Fatalf("testenv: %s/manifest.json: case %q: field file: %q is not a file name in the family folder", family, name, file)
		}
		if err := json.Unmarshal(raw, &cases[i]); err != nil {
			t.Fatalf("testenv: %s/manifest.json: case %q: %v", family, name, err)
		}
		if g, ok := any(&cases[i]).(goldenCase); ok {
			c := g.golden()
			c.family, c.dir, c.raw = family, dir, fields
		}
	}
	return dir, cases
}

// GoldenFamilies returns the folders of GoldenDir that hold a manifest.json, sorted.
func GoldenFamilies(t testing.TB) []string {
	t.Helper()
	root := GoldenDir(t)
	ents, err := os.ReadDir(root)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	var out []string
	for _, e := range ents {
		if _, err := os.Stat(filepath.Join(root, e.Name(), "manifest.json")); err == nil && e.IsDir() {
			out = append(out, e.Name())
		}
	}
	if len(out) == 0 {
		t.Fatalf("testenv: %s holds no family folder with a manifest.json", root)
	}
	return out
}

// readManifest returns the cases of dir/manifest.json as raw JSON.
func readManifest(dir string) ([]json.RawMessage, error) {
	data, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		return nil, err
	}
	var m struct {
		Cases []json.RawMessage `json:"cases"`
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	if len(m.Cases) == 0 {
		return nil, errors.New("lists no cases")
	}
	return m.Cases, nil
}
