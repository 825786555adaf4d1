// Package torchtest writes PyTorch checkpoints for tests: the zip archive torch.save
// has written since PyTorch 1.6, with a protocol-2 pickle of the state dict. forgeflow
// itself never writes this format; tests of the loaders need tiny files of it.
package torchtest

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
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

// Dict is a Python dict for ZipValue, in insertion order: keys are strings, int64s or
// bools.
type Dict struct {
	Keys, Values []any
}

// Set appends key: value.
func (d *Dict) Set(key, value any) *Dict {
	d.Keys, d.Values = append(d.Keys, key), append(d.Values, value)
	return d
}

// Tuple is a Python tuple for ZipValue.
type Tuple []any

// ZipValue returns a torch.save archive of v, a value made of *Dict, Tuple, []any (a
// list), string, int64, bool, float64, nil and Tensor (each tensor in a storage of its
// own; its Name is not used): what checkpoints that are not a flat state dict hold (an
// A1111 hypernetwork keeps its layers under integer keys, in pairs).
func ZipValue(v any) ([]byte, error) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	store := func(name string, data []byte) error {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: "archive/" + name, Method: zip.Store})
		if err == nil {
			_, err = w.Write(data)
		}
		return err
	}
	pk := &pickler{store: store}
	pk.op(0x80, 2)
	if err := pk.value(v); err != nil {
		return nil, err
	}
	pk.op('.')
	for _, e := range []struct {
		name string
		data []byte
	}{{"data.pkl", pk.p}, {"byteorder", []byte("little")}, {"version", []byte("3\n")}} {
		if err := store(e.name, e.data); err != nil {
			return nil, err
		}
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// pickler writes protocol-2 opcodes for ZipValue.
type pickler struct {
	p        []byte
	storages int
	store    func(name string, data []byte) error
}

func (k *pickler) op(b ...byte) { k.p = append(k.p, b...) }

func (k *pickler) str(s string) {
	k.op('X')
	k.p = binary.LittleEndian.AppendUint32(k.p, uint32(len(s)))
	k.p = append(k.p, s...)
}

func (k *pickler) integer(n int64) {
	k.op('J')
	k.p = binary.LittleEndian.AppendUint32(k.p, uint32(int32(n)))
}

func (k *pickler) value(v any) error {
	switch t := v.(type) {
	case nil:
		k.op('N')
	case bool:
		if t {
			k.op(0x88)
		} else {
			k.op(0x89)
		}
	case int64:
		k.integer(t)
	case float64:
		k.op('G')
		k.p = binary.BigEndian.AppendUint64(k.p, math.Float64bits(t))
	case string:
		k.str(t)
	case Tuple:
		k.op('(')
		for _, x := range t {
			if err := k.value(x); err != nil {
				return err
			}
		}
		k.op('t')
	case []any:
		k.op(']', '(')
		for _, x := range t {
			if err := k.value(x); err != nil {
				return err
			}
		}
		k.op('e')
	case *Dict:
		k.op('}', '(')
		for i, key := range t.Keys {
			if err := k.value(key); err != nil {
				return err
			}
			if err := k.value(t.Values[i]); err != nil {
				return err
			}
		}
		k.op('u')
	case Tensor:
		return k.tensor(t)
	default:
		return fmt.Errorf("torchtest: cannot pickle %T", v)
	}
	return nil
}

// tensor writes _rebuild_tensor_v2(persistent storage, 0, shape, contiguous strides,
// False, OrderedDict()) and stores its bytes.
func (k *pickler) tensor(t Tensor) error {
	class, ok := storageClasses[t.DType]
	if !ok {
		return fmt.Errorf("torchtest: no storage class for %s", t.DType)
	}
	n, _ := weights.ShapeElements(t.Shape, 1<<40)
	if int64(len(t.Data)) != n*int64(t.DType.ElemSize()) {
		return fmt.Errorf("torchtest: %d bytes for %v %s", len(t.Data), t.Shape, t.DType)
	}
	stride := make([]int64, len(t.Shape))
	s := int64(1)
	for d := len(t.Shape) - 1; d >= 0; d-- {
		stride[d] = s
		s *= t.Shape[d]
	}
	ints := func(v []int64) {
		k.op('(')
		for _, x := range v {
			k.integer(x)
		}
		k.op('t')
	}
	global := func(mod, name string) { k.op('c'); k.p = append(k.p, mod+"\n"+name+"\n"...) }
	key := strconv.Itoa(k.storages)
	k.storages++
	global("torch._utils", "_rebuild_tensor_v2")
	k.op('(', '(')
	k.str("storage")
	global("torch", class)
	k.str(key)
	k.str("cpu")
	k.integer(n)
	k.op('t', 'Q')
	k.integer(0)
	ints(t.Shape)
	ints(stride)
	k.op(0x89)
	global("collections", "OrderedDict")
	k.op(')', 'R', 't', 'R')
	return k.store("data/"+key, t.Data)
}
