package layering

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/internal/testenv"
)

const module = "github.com/forgeflow/forgeflow/"

// forbidden maps a package prefix (relative to the module) to the prefixes it must not
// import, directly or indirectly.
var forbidden = map[string][]string{
	"graph":     {"gpu", "weights", "diffusion", "nodes", "executor", "server"},
	"gpu":       {"graph", "weights", "diffusion", "nodes", "executor", "server"},
	"weights":   {"gpu", "graph", "diffusion", "nodes", "executor", "server"},
	"diffusion": {"graph", "nodes", "executor", "server"},
	"executor":  {"gpu", "weights", "diffusion", "nodes/builtin", "server"},
	"server":    {"gpu", "diffusion", "nodes/builtin"},
	"cluster":   {"gpu", "weights", "diffusion", "nodes/builtin", "server"},
}

// leaves import no package of the module at all: the arithmetic that gpu/ and weights/
// share (neither may import the other).
var leaves = []string{"internal/dtype"}

// rootNodes is package nodes itself (not its sub-packages): the light interface the
// executor imports.
var rootNodes = []string{"gpu", "weights", "diffusion", "executor", "server", "nodes/builtin"}

type pkg struct {
	ImportPath string
	Deps       []string
}

func TestImportLayering(t *testing.T) {
	root := testenv.RepoRoot(t)
	cmd := exec.Command("go", "list", "-deps=false", "-json", "./...")
	cmd.Dir = root
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(out)
	var pkgs []pkg
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("go list: %v", err)
	}
	if len(pkgs) == 0 {
		t.Fatal("go list returned no packages")
	}
	checked := 0
	for _, p := range pkgs {
		rel := strings.TrimPrefix(p.ImportPath, module)
		if isLeaf(rel) {
			checked++
			for _, dep := range p.Deps {
				if strings.HasPrefix(dep, module) {
					t.Errorf("%s imports %s: it is a leaf and imports nothing of the module", rel, strings.TrimPrefix(dep, module))
				}
			}
			continue
		}
		var bans []string
		if rel == "nodes" {
			bans = rootNodes
		} else {
			for prefix, b := range forbidden {
				if within(rel, prefix) {
					bans = b
				}
			}
		}
		if bans == nil {
			continue
		}
		checked++
		for _, dep := range p.Deps {
			if !strings.HasPrefix(dep, module) {
				continue
			}
			drel := strings.TrimPrefix(dep, module)
			for _, ban := range bans {
				if within(drel, ban) {
					t.Errorf("%s imports %s (directly or through another package): %s must not depend on %s", rel, drel, rel, ban)
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no package matched a layering rule")
	}
}

func within(path, prefix string) bool {
	return path == prefix || strings.HasPrefix(path, prefix+"/")
}

func isLeaf(rel string) bool {
	for _, l := range leaves {
		if within(rel, l) {
			return true
		}
	}
	return false
}
