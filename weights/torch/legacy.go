package torch

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/big"
)

// legacyMagic is the first pickle of a pre-1.6 torch.save file (MAGIC_NUMBER in
// torch/serialization.py).
var legacyMagic, _ = new(big.Int).SetString("1950a86a20f9469cfc6c", 16)

// legacyProtocol is the second pickle (PROTOCOL_VERSION).
const legacyProtocol = 1001

// openLegacy reads the pre-1.6 format (torch/serialization.py, _legacy_load): five pickles
// back to back — magic number, protocol version, sys_info, the object, the list of
// storage keys in data order — then, per key, an 8-byte little-endian element count and
// the raw elements.
func (f *File) openLegacy() error {
	data := f.region.Data
	v, pos, err := unpickleAt(f.name, data, 0, nil)
	if err != nil {
		return err
	}
	if b, ok := v.(*big.Int); !ok || b.Cmp(legacyMagic) != 0 {
		return f.unsupported("pickle file that is not a torch checkpoint (first value %v)", v)
	}
	if v, pos, err = unpickleAt(f.name, data, pos, nil); err != nil {
		return err
	}
	if v != int64(legacyProtocol) {
		return f.unsupported("legacy torch protocol %v", v)
	}
	if v, pos, err = unpickleAt(f.name, data, pos, nil); err != nil {
		return err
	}
	if info, ok := v.(*Dict); ok {
		if le, ok := info.Get("little_endian"); ok && le != true {
			return f.unsupported("big-endian legacy checkpoint")
		}
	}
	roots := map[string]*Storage{}
	views := map[string]*Storage{}
	f.root, pos, err = unpickleAt(f.name, data, pos, func(pid any) (any, error) { return legacyStorage(pid, roots, views) })
	if err != nil {
		return err
	}
	keysAt := pos
	v, pos, err = unpickleAt(f.name, data, pos, nil)
	if err != nil {
		return err
	}
	keys, ok := v.(*List)
	if !ok {
		return f.fail("", int64(keysAt), "storage key list is %T", v)
	}
	f.legacy = map[string][]byte{}
	f.legacyAt = map[string]int64{}
	for _, k := range keys.Items {
		key, ok := k.(string)
		if !ok {
			return f.fail("", int64(pos), "storage key %v is not a string", k)
		}
		st, ok := roots[key]
		if !ok {
			return f.fail("", int64(pos), "storage %q is listed but no tensor uses it", key)
		}
		if _, dup := f.legacy[key]; dup {
			return f.fail("", int64(pos), "storage %q is listed twice", key)
		}
		if len(data)-pos < 8 {
			return f.fail("", int64(pos), "storage %q: element count runs past the end (truncated)", key)
		}
		n := binary.LittleEndian.Uint64(data[pos:])
		if n != uint64(st.Numel) {
			return f.fail("", int64(pos), "storage %q holds %d elements, the pickle says %d", key, n, st.Numel)
		}
		pos += 8
		size := uint64(st.Numel) * uint64(st.DType.ElemSize())
		if size > uint64(len(data)-pos) {
			return f.fail("", int64(pos), "storage %q: %d bytes run past the end (truncated)", key, size)
		}
		f.legacy[key] = data[pos : pos+int(size) : pos+int(size)]
		f.legacyAt[key] = int64(pos)
		pos += int(size)
	}
	for key := range roots {
		if _, ok := f.legacy[key]; !ok {
			return f.fail("", -1, "storage %q has no data", key)
		}
	}
	return nil
}

// legacyStorage resolves a legacy persistent id ('storage', storage_type, root_key,
// location, numel, view_metadata), where view_metadata is None or (view_key, offset,
// size) naming a slice of the root storage. ('module', ...) ids carry source code and are
// refused.
func legacyStorage(pid any, roots, views map[string]*Storage) (any, error) {
	t, ok := pid.(Tuple)
	if !ok || len(t) != 6 || t[0] != "storage" {
		return nil, fmt.Errorf("persistent id %.100v is not a legacy ('storage', type, key, location, numel, view) tuple", pid)
	}
	g, ok1 := t[1].(Global)
	key, ok2 := t[2].(string)
	loc, _ := t[3].(string)
	numel, ok3 := t[4].(int64)
	if !ok1 || !ok2 || !ok3 || numel < 0 || numel > math.MaxInt64/8 {
		return nil, fmt.Errorf("persistent id %v has bad fields", pid)
	}
	dt, ok := storageDTypes[g.Name]
	if !ok || g.Module != "torch" {
		return nil, fmt.Errorf("storage type %s", g)
	}
	root, ok := roots[key]
	if !ok {
		root = &Storage{DType: dt, Key: key, Location: loc, Numel: numel}
		roots[key] = root
	} else if root.DType != dt || root.Numel != numel {
		return nil, fmt.Errorf("storage %q declared twice differently", key)
	}
	if t[5] == nil {
		return root, nil
	}
	vm, ok := t[5].(Tuple)
	if !ok || len(vm) != 3 {
		return nil, fmt.Errorf("view metadata %v", t[5])
	}
	vkey, ok1 := vm[0].(string)
	off, ok2 := vm[1].(int64)
	size, ok3 := vm[2].(int64)
	if !ok1 || !ok2 || !ok3 || off < 0 || size < 0 || off > numel || size > numel-off {
		return nil, fmt.Errorf("view %v of a %d-element storage", vm, numel)
	}
	if v, ok := views[vkey]; ok {
		return v, nil
	}
	v := &Storage{DType: dt, Key: key, Location: loc, Numel: size, Base: off}
	views[vkey] = v
	return v, nil
}
