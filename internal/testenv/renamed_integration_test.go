//go:build integration

package testenv

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestGoldenRenamedSet runs every golden test of the repository (goldenTests: each test
// that reaches testenv.Golden*) against a copy of the golden set whose case files and
// tokenizer data files all carry other names (renamedCopy), with CI=true so that nothing
// passes by skipping a missing fixture. A test that expects a fixed file name fails
// here. Its output is shown when it fails.
func TestGoldenRenamedSet(t *testing.T) {
	EndToEnd(t)
	src := GoldenDir(t)
	dst := t.TempDir()
	renamedCopy(t, src, dst)
	root := RepoRoot(t)
	found := goldenTests(t, root)
	if len(found) == 0 {
		t.Fatal("no golden test found")
	}
	var pkgs, names []string
	for pkg, tests := range found {
		pkgs = append(pkgs, pkg)
		for _, n := range tests {
			if !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
	}
	slices.Sort(pkgs)
	slices.Sort(names)
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("no go command to run the golden tests with: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	args := append([]string{"test", "-count=1", "-tags", "integration", "-v", "-run", "^(" + strings.Join(names, "|") + ")$"}, pkgs...)
	cmd := exec.CommandContext(ctx, goBin, args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "FORGEFLOW_GOLDEN_DIR="+dst, "CI=true")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("golden tests against the renamed copy failed (%v): go %s\n%s", err, strings.Join(args, " "), tail(failures(out), 200))
	}
	// A skipped top-level test would hide a fixture it did not find.
	skipped := regexp.MustCompile(`(?m)^--- SKIP: (\S+)`).FindAllSubmatch(out, -1)
	for _, m := range skipped {
		t.Errorf("%s was skipped against the renamed copy", m[1])
	}
	ran := regexp.MustCompile(`(?m)^--- PASS: (\S+)`).FindAll(out, -1)
	t.Logf("%d golden tests in %d packages passed against the renamed copy", len(ran), len(pkgs))
	if len(ran) == 0 {
		t.Fatalf("no test ran:\n%s", tail(out, 50))
	}
}

// failures is out without the lines of passing tests and the run markers.
func failures(out []byte) []byte {
	quiet := regexp.MustCompile(`(?m)^(\s*--- PASS: .*|=== (RUN|PAUSE|CONT|NAME) .*)\n`)
	return quiet.ReplaceAll(out, nil)
}

// tail returns the last n lines of out.
func tail(out []byte, n int) string {
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
