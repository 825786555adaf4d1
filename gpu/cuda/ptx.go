package cuda

import (
	"bytes"
	"embed"
	"fmt"
)

// The kernels as PTX for compute_70 (Volta and every later GPU), generated from
// kernels/*.cu by NVRTC and committed, so that a machine with the NVIDIA driver but no
// NVRTC still runs them: the driver compiles PTX for its device at load. Each file's
// first line records the hash of the source it was made from; a file that does not match
// the source is never used, and TestEmbeddedPTX fails until it is regenerated
// (go test ./gpu/cuda -run TestEmbeddedPTX -update, with NVRTC installed).
//
//go:embed kernels/ptx/*.ptx
var ptxFS embed.FS

// ptxArch is the virtual architecture of the embedded PTX.
const ptxArch = 70

func ptxHeader(m module, hash, nvrtc string) string {
	return fmt.Sprintf("// forgeflow kernels %s source-sha256 %s nvrtc %s compute_%d\n", m, hash, nvrtc, ptxArch)
}

// embeddedPTX returns module m's PTX when it was generated from the source of hash.
func embeddedPTX(m module, hash string) ([]byte, bool) {
	data, err := ptxFS.ReadFile("kernels/ptx/" + string(m) + ".ptx")
	if err != nil {
		return nil, false
	}
	line, _, ok := bytes.Cut(data, []byte("\n"))
	want := fmt.Sprintf("// forgeflow kernels %s source-sha256 %s ", m, hash)
	if !ok || !bytes.HasPrefix(line, []byte(want)) {
		return nil, false
	}
	return data, true
}
