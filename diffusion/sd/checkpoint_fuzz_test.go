package sd

import (
	"bytes"
	"os"
	"testing"

	"github.com/forgeflow/forgeflow/weights/detect"
)

// FuzzLoadCheckpoint: whatever the bytes, LoadCheckpoint returns a checkpoint or an
// error, never panics. Seeds are a tiny valid checkpoint and cut-down versions of it.
func FuzzLoadCheckpoint(f *testing.F) {
	var buf bytes.Buffer
	s := TinyRandomSpec(detect.FamilySD1)
	s.CLIPL.Layers = 1
	if err := WriteRandomCheckpoint(&buf, s); err != nil {
		f.Fatal(err)
	}
	good := buf.Bytes()
	f.Add(good)
	f.Add(good[:len(good)/3])
	f.Add(good[:64])
	f.Add([]byte("PK\x03\x04"))
	f.Add([]byte{0x80, 2, '}', '.'})
	rt := ckRuntime(f)
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		tmp, err := os.CreateTemp(dir, "fuzz-*.safetensors")
		if err != nil {
			t.Fatal(err)
		}
		path := tmp.Name()
		defer os.Remove(path)
		_, err = tmp.Write(data)
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
		ck, err := LoadCheckpoint(rt, path, LoadOptions{})
		if err == nil {
			ck.Close()
		}
	})
}
