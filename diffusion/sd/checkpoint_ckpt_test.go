package sd

import (
	"archive/zip"
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/forgeflow/forgeflow/gpu"
)

// writeTorchCheckpoint writes tensors as torch.save does since PyTorch 1.6 (a zip with
// archive/data.pkl, a protocol-2 pickle of {"state_dict": {name: tensor}}, and one
// archive/data/<key> entry per storage), every tensor a HalfStorage of its own.
func writeTorchCheckpoint(t *testing.T, path string, ts []RandomTensor, seed uint64) {
	t.Helper()
	var p []byte
	op := func(b ...byte) { p = append(p, b...) }
	str := func(s string) {
		op('X')
		p = binary.LittleEndian.AppendUint32(p, uint32(len(s)))
		p = append(p, s...)
	}
	integer := func(n int) {
		op('J')
		p = binary.LittleEndian.AppendUint32(p, uint32(int32(n)))
	}
	global := func(mod, name string) { op('c'); p = append(p, mod+"\n"+name+"\n"...) }
	ints := func(v []int) {
		op('(')
		for _, x := range v {
			integer(x)
		}
		op('t')
	}
	op(0x80, 2, '}')
	str("state_dict")
	op('}', '(')
	storages := map[string][]byte{}
	for i, x := range ts {
		key := strconv.Itoa(i)
		vals := x.Values(seed)
		data := make([]byte, 2*len(vals))
		if err := gpu.EncodeFloat32(gpu.F16, data, vals); err != nil {
			t.Fatal(err)
		}
		storages[key] = data
		stride := make([]int, len(x.Shape))
		s := 1
		for d := len(x.Shape) - 1; d >= 0; d-- {
			stride[d] = s
			s *= x.Shape[d]
		}
		str(x.Name)
		global("torch._utils", "_rebuild_tensor_v2")
		op('(', '(')
		str("storage")
		global("torch", "HalfStorage")
		str(key)
		str("cpu")
		integer(len(vals))
		op('t', 'Q')
		integer(0)
		ints(x.Shape)
		ints(stride)
		op(0x89)
		global("collections", "OrderedDict")
		op(')', 'R', 't', 'R')
	}
	op('u', 's', '.')
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	zw := zip.NewWriter(f)
	add := func(name string, data []byte) {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Store})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	add("archive/data.pkl", p)
	add("archive/byteorder", []byte("little"))
	for k, v := range storages {
		add("archive/data/"+k, v)
	}
	add("archive/version", []byte("3\n"))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestLoadCkpt loads the same tiny SD1 checkpoint from a PyTorch .ckpt and from
// safetensors and checks that the VAE decodes identically.
func TestLoadCkpt(t *testing.T) {
	rt := ckRuntime(t)
	dir := t.TempDir()
	spec := tinySD1(71)
	ts, err := spec.Tensors()
	if err != nil {
		t.Fatal(err)
	}
	ckptPath, stPath := filepath.Join(dir, "m.ckpt"), filepath.Join(dir, "m.safetensors")
	writeTorchCheckpoint(t, ckptPath, ts, spec.Seed)
	writeSpec(t, stPath, spec)
	a, err := LoadCheckpoint(rt, ckptPath, LoadOptions{SkipCLIP: true})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := LoadCheckpoint(rt, stPath, LoadOptions{SkipCLIP: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if a.Family != b.Family || a.Model.ADM != b.Model.ADM {
		t.Fatalf(".ckpt loads as %s, safetensors as %s", a.Family, b.Family)
	}
	lat, _ := rt.FromFloat32(ckRandVals(72, 4*4*4), 1, 4, 4, 4)
	defer lat.Release()
	ia, err := a.VAE.Decode(context.Background(), lat)
	if err != nil {
		t.Fatal(err)
	}
	ib, err := b.VAE.Decode(context.Background(), lat)
	if err != nil {
		t.Fatal(err)
	}
	for i := range ia.Pix {
		if ia.Pix[i] != ib.Pix[i] {
			t.Fatalf("pixel %d: .ckpt %v, safetensors %v", i, ia.Pix[i], ib.Pix[i])
		}
	}
}
