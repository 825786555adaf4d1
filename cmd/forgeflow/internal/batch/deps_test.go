package batch

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoServerImport keeps run and validate free of the HTTP server: the package and
// everything it imports (go list -deps) must not include server/ or a package under it.
func TestNoServerImport(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list imports: %v", err)
	}
	const self = "github.com/forgeflow/forgeflow/cmd/forgeflow/internal/batch"
	out, err := exec.Command(goBin, "list", "-deps", self).Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", self, err)
	}
	const forbidden = "github.com/forgeflow/forgeflow/server"
	deps := strings.Fields(string(out))
	if len(deps) == 0 || deps[len(deps)-1] != self {
		t.Fatalf("go list -deps gave no dependency list: %q", out)
	}
	for _, d := range deps {
		if d == forbidden || strings.HasPrefix(d, forbidden+"/") {
			t.Errorf("%s imports %s: run and validate must not depend on the server", self, d)
		}
	}
	for _, want := range []string{"github.com/forgeflow/forgeflow/executor", "github.com/forgeflow/forgeflow/graph"} {
		if !strings.Contains(string(out), want+"\n") {
			t.Errorf("dependency list lacks %s: the check is not looking at the right package", want)
		}
	}
}
