package torch

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"testing"
)

// pk writes a pickle byte by byte, as torch.save (protocol 2) lays it out.
type pk struct{ b []byte }

func newPickle() *pk { return &pk{b: []byte{0x80, 2}} } // PROTO 2

func (p *pk) op(ops ...byte) *pk { p.b = append(p.b, ops...); return p }
func (p *pk) mark() *pk          { return p.op('(') }
func (p *pk) stop() []byte       { return append(p.b, '.') }

// str pushes a BINUNICODE string.
func (p *pk) str(s string) *pk {
	p.op('X')
	p.b = binary.LittleEndian.AppendUint32(p.b, uint32(len(s)))
	p.b = append(p.b, s...)
	return p
}

// int pushes n with the shortest of BININT1, BININT2 and BININT.
func (p *pk) int(n int) *pk {
	switch {
	case n >= 0 && n < 256:
		return p.op('K', byte(n))
	case n >= 0 && n < 65536:
		return p.op('M', byte(n), byte(n>>8))
	}
	p.op('J')
	p.b = binary.LittleEndian.AppendUint32(p.b, uint32(int32(n)))
	return p
}

// global pushes GLOBAL module\nname\n.
func (p *pk) global(mod, name string) *pk {
	p.op('c')
	p.b = append(p.b, mod+"\n"+name+"\n"...)
	return p
}

func (p *pk) put(i byte) *pk { return p.op('q', i) }

// ints pushes a tuple of ints.
func (p *pk) ints(v ...int) *pk {
	p.mark()
	for _, x := range v {
		p.int(x)
	}
	return p.op('t')
}

// tensor pushes torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False,
// OrderedDict()) with the storage as a persistent id.
func (p *pk) tensor(storageClass, key string, numel, offset int, shape, stride []int) *pk {
	p.global("torch._utils", "_rebuild_tensor_v2")
	p.mark()
	p.mark().str("storage").global("torch", storageClass).str(key).str("cpu").int(numel).op('t').op('Q')
	p.int(offset).ints(shape...).ints(stride...)
	p.op(0x89) // NEWFALSE
	p.global("collections", "OrderedDict").op(')', 'R')
	p.op('t', 'R')
	return p
}

// checkpoint zips a pickle and storages the way torch.save lays them out.
func checkpoint(t *testing.T, pickle []byte, storages map[string][]byte, method uint16) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	add := func(name string, data []byte) {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: method})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
	}
	add("archive/data.pkl", pickle)
	add("archive/byteorder", []byte("little"))
	for k, v := range storages {
		add("archive/data/"+k, v)
	}
	add("archive/version", []byte("3\n"))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
