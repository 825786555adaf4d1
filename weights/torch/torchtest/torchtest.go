// Package torchtest writes PyTorch checkpoints for tests: the zip archive torch.save
// has written since PyTorch 1.6, with a protocol-2 pickle of the state dict. forgeflow
// itself never writes this format; tests of the loaders need tiny files of it.
package torchtest

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"fmt"
	"strconv"

	"github.com/forgeflow/forgeflow/weights"
)

// Tensor is one state-dict entry: its bytes are stored as given (little-endian,
// row-major) in a storage of its own.
type Tensor struct {
	Name  string
	DType weights.DType
	Shape []int64
	Data  []byte
}

// storageClasses are torch's legacy typed-storage class names (torch/storage.py).
var storageClasses = map[weights.DType]string{
	weights.F64: "DoubleStorage", weights.F32: "FloatStorage", weights.F16: "HalfStorage",
	weights.BF16: "BFloat16Storage", weights.I64: "LongStorage", weights.I32: "IntStorage",
	weights.I16: "ShortStorage", weights.I8: "CharStorage", weights.U8: "ByteStorage",
	weights.BOOL: "BoolStorage", weights.F8_E4M3: "Float8_e4m3fnStorage", weights.F8_E5M2: "Float8_e5m2Storage",
}

// Zip returns a torch.save archive of the tensors: {wrap: {name: tensor}} when wrap is
// set (Lightning-era .ckpt files keep the weights under "state_dict"), else the bare
// dict. Each tensor is _rebuild_tensor_v2(persistent storage, 0, shape, contiguous
// strides, False, OrderedDict()), its storage a stored (uncompressed) entry.
func Zip(ts []Tensor, wrap string) ([]byte, error) {
	var p []byte
	op := func(b ...byte) { p = append(p, b...) }
	str := func(s string) {
		op('X')
		p = binary.LittleEndian.AppendUint32(p, uint32(len(s)))
		p = append(p, s...)
	}
	integer := func(n int64) {
		op('J')
		p = binary.LittleEndian.AppendUint32(p, uint32(int32(n)))
	}
	ints := func(v []int64) {
		op('(')
		for _, x := range v {
			integer(x)
		}
		op('t')
	}
	global := func(mod, name string) { op('c'); p = append(p, mod+"\n"+name+"\n"...) }
	op(0x80, 2)
	if wrap != "" {
		op('}')
		str(wrap)
	}
	op('}', '(')
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	store := func(name string, data []byte) error {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: "archive/" + name, Method: zip.Store})
		if err == nil {
			_, err = w.Write(data)
		}
		return err
	}
	for i, t := range ts {
		class, ok := storageClasses[t.DType]
		if !ok {
			return nil, fmt.Errorf("torchtest: %s: no storage class for %s", t.Name, t.DType)
		}
		n, _ := weights.ShapeElements(t.Shape, 1<<40)
		if int64(len(t.Data)) != n*int64(t.DType.ElemSize()) {
			return nil, fmt.Errorf("torchtest: %s: %d bytes for %v %s", t.Name, len(t.Data), t.Shape, t.DType)
		}
		stride := make([]int64, len(t.Shape))
		s := int64(1)
		for d := len(t.Shape) - 1; d >= 0; d-- {
			stride[d] = s
			s *= t.Shape[d]
		}
		key := strconv.Itoa(i)
		str(t.Name)
		global("torch._utils", "_rebuild_tensor_v2")
		op('(', '(')
		str("storage")
		global("torch", class)
		str(key)
		str("cpu")
		integer(n)
		op('t', 'Q')
		integer(0)
		ints(t.Shape)
		ints(stride)
		op(0x89)
		global("collections", "OrderedDict")
		op(')', 'R', 't', 'R')
		if err := store("data/"+key, t.Data); err != nil {
			return nil, err
		}
	}
	op('u')
	if wrap != "" {
		op('s')
	}
	op('.')
	for _, e := range []struct {
		name string
		data []byte
	}{{"data.pkl", p}, {"byteorder", []byte("little")}, {"version", []byte("3\n")}} {
		if err := store(e.name, e.data); err != nil {
			return nil, err
		}
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
