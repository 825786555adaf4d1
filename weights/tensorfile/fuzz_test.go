package tensorfile_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// FuzzOpenBytes feeds arbitrary images to the sniffer and whichever reader it picks:
// nothing may panic, and every tensor of an accepted file must read and convert.
func FuzzOpenBytes(f *testing.F) {
	dir := f.TempDir()
	for name, write := range map[string]func(testing.TB, string){"a.safetensors": writeSafetensors, "a.gguf": writeGGUF, "a.ckpt": writeTorch} {
		p := filepath.Join(dir, name)
		write(f, p)
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("GGUF"))
	f.Add([]byte("\x80\x02}."))
	f.Fuzz(func(t *testing.T, b []byte) {
		tf, err := tensorfile.OpenBytes("fuzz", b)
		if err != nil {
			return
		}
		defer tf.Close()
		for _, info := range tf.Tensors() {
			tn, err := tf.Tensor(info.Name)
			if err != nil {
				continue
			}
			_, _ = tn.Float32()
		}
	})
}
