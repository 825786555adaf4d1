package gemm

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestDefaultFromEnv checks that FORGEFLOW_GEMM forces Default's path. The
// variable is read once per process, so each case runs this test binary
// again with the variable set and TestDefaultHelper reporting the result.
func TestDefaultFromEnv(t *testing.T) {
	cases := []struct {
		env  string
		want string
	}{
		{"generic", "path=generic"},
		{"avx2", expectPath(PathAVX2)},
		{"avx512", expectPath(PathAVX512)},
		{"bogus", `error=FORGEFLOW_GEMM: gemm: unknown path "bogus"`},
	}
	for _, tc := range cases {
		t.Run(tc.env, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestDefaultHelper$", "-test.v")
			cmd.Env = append(os.Environ(), EnvPath+"="+tc.env, "FORGEFLOW_GEMM_HELPER=1")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("helper failed: %v\n%s", err, out)
			}
			if !strings.Contains(string(out), "RESULT "+tc.want) {
				t.Fatalf("want %q in helper output:\n%s", tc.want, out)
			}
		})
	}
}

func expectPath(p Path) string {
	if Available(p) {
		return "path=" + p.String()
	}
	return "error=" + EnvPath + "=" + p.String() + ": gemm: path " + p.String()
}

// TestDefaultHelper is the subprocess side of TestDefaultFromEnv.
func TestDefaultHelper(t *testing.T) {
	if os.Getenv("FORGEFLOW_GEMM_HELPER") != "1" {
		t.Skip("helper for TestDefaultFromEnv")
	}
	e, err := Default()
	if err != nil {
		// The package-level calls must report the same error.
		if err2 := SGEMM(1, 1, 1, []float32{1}, 1, []float32{1}, 1, []float32{0}, 1, false); err2 == nil || err2.Error() != err.Error() {
			t.Fatalf("SGEMM error %v, Default error %v", err2, err)
		}
		fmt.Println("RESULT error=" + err.Error())
		return
	}
	c := []float32{0}
	if err := SGEMM(1, 1, 1, []float32{2}, 1, []float32{3}, 1, c, 1, false); err != nil || c[0] != 6 {
		t.Fatalf("SGEMM = %v, %v", c[0], err)
	}
	fmt.Println("RESULT path=" + e.Path().String())
}
