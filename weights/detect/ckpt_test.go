package detect

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// writeTorchZip writes ts as a torch.save zip archive (float32 zeros), with the state
// dict under "state_dict" as Lightning-era .ckpt files have it. The pickle is emitted
// opcode by opcode (protocol 2), following what torch.save writes:
// {"state_dict": {name: torch._utils._rebuild_tensor_v2(persistent storage, offset,
// size, stride, requires_grad=False, OrderedDict())}}.
func writeTorchZip(t *testing.T, path string, ts tensors) {
	t.Helper()
	var p bytes.Buffer
	str := func(s string) {
		p.WriteByte('X')
		binary.Write(&p, binary.LittleEndian, uint32(len(s)))
		p.WriteString(s)
	}
	integer := func(v int64) {
		p.WriteByte('J')
		binary.Write(&p, binary.LittleEndian, int32(v))
	}
	tuple := func(vals []int64) {
		p.WriteByte('(')
		for _, v := range vals {
			integer(v)
		}
		p.WriteByte('t')
	}
	p.WriteString("\x80\x02}")
	str("state_dict")
	p.WriteString("}(")
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	store := func(name string, data []byte) {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: "archive/" + name, Method: zip.Store})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
	}
	for i, ti := range ts {
		n := int64(1)
		stride := make([]int64, len(ti.Shape))
		for d := len(ti.Shape) - 1; d >= 0; d-- {
			stride[d] = n
			n *= ti.Shape[d]
		}
		key := fmt.Sprint(i)
		str(ti.Name)
		p.WriteString("ctorch._utils\n_rebuild_tensor_v2\n(")
		p.WriteByte('(')
		str("storage")
		p.WriteString("ctorch\nFloatStorage\n")
		str(key)
		str("cpu")
		integer(n)
		p.WriteString("tQ")
		integer(0)
		tuple(ti.Shape)
		tuple(stride)
		p.WriteString("\x89ccollections\nOrderedDict\n)RtR")
		store("data/"+key, make([]byte, 4*n))
	}
	p.WriteString("us.")
	store("data.pkl", p.Bytes())
	store("byteorder", []byte("little"))
	store("version", []byte("3\n"))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// A legacy-style SD1 checkpoint: .ckpt (torch zip) with the single-file prefixes.
func TestDetectFileCkpt(t *testing.T) {
	tinyVAE := vaeSpec{ch: 8, z: 4, nres: 1, mult: []int{1, 2}, quant: true}
	ts := join(pre("model.diffusion_model.", tinyUNet.build()), pre("first_stage_model.", tinyVAE.build()),
		pre("cond_stage_model.transformer.", clipHF(2, 16, 64, false)))
	p := filepath.Join(t.TempDir(), "v1-tiny.ckpt")
	writeTorchZip(t, p, ts)
	m, err := DetectFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if m.Kind != KindCheckpoint || m.Family != FamilySD1 || m.VAE == nil || len(m.TextEncoders) != 1 ||
		m.Diffusion.UNet.ContextDim != 32 || m.TextEncoders[0].Prefix != "cond_stage_model.transformer.text_model." {
		t.Fatalf("kind %s family %s vae %v encoders %+v", m.Kind, m.Family, m.VAE != nil, m.TextEncoders)
	}
}
