package cuda

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "regenerate kernels/ptx/*.ptx with the NVRTC found")

// TestEmbeddedPTX checks that the committed PTX was made from the current kernel source
// (and defines every kernel); with -update it regenerates the files with NVRTC.
func TestEmbeddedPTX(t *testing.T) {
	var nv *nvrtcLib
	if *update {
		env := osSearchEnv()
		var err error
		if nv, err = loadNVRTC(env, searchDirs(env)); err != nil {
			t.Fatalf("-update needs NVRTC: %v", err)
		}
	}
	for _, m := range modules {
		src, err := moduleSource(m)
		if err != nil {
			t.Fatal(err)
		}
		hash := sourceHash(src)
		if *update {
			img, err := nv.compileArch(src, string(m)+".cu", "compute_70", true)
			if err != nil {
				t.Fatal(err)
			}
			data := append([]byte(ptxHeader(m, hash, nv.Version())), strings.TrimRight(string(img.Data), "\x00")...)
			if err := os.WriteFile(filepath.Join("kernels", "ptx", string(m)+".ptx"), data, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		ptx, ok := embeddedPTX(m, hash)
		if !ok {
			t.Errorf("kernels/ptx/%s.ptx was not made from the current %s.cu: run go test ./gpu/cuda -run TestEmbeddedPTX -update (needs NVRTC, e.g. Debian's libnvrtc11.2)", m, m)
			continue
		}
		for _, k := range declaredKernels(src) {
			if !strings.Contains(string(ptx), ".entry "+k+"(") {
				t.Errorf("%s.ptx lacks the entry %s", m, k)
			}
		}
	}
}
