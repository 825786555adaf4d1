package torch

import (
	"archive/zip"
	"bytes"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"strings"

	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/internal/mmap"
)

// maxNesting bounds how deep nested dicts of the state dict are flattened.
const maxNesting = 8

// File is an open PyTorch zip checkpoint. Tensor data is valid until Close.
type File struct {
	name    string
	region  *mmap.Region
	entries map[string]*zip.File
	prefix  string // the archive's top-level folder, with its trailing slash
	root    any
	names   []string
	tensors map[string]*TensorRef
	// legacy holds each storage's bytes, and legacyAt their file offsets, for the
	// pre-1.6 format (nil for zip archives).
	legacy   map[string][]byte
	legacyAt map[string]int64
}

// Open maps the named checkpoint and decodes its pickle. Storages are not read until a
// tensor is asked for.
func Open(path string) (*File, error) {
	r, err := mmap.Open(path)
	if err != nil {
		return nil, fmt.Errorf("torch: %w", err)
	}
	f, err := newFile(path, r)
	if err != nil {
		r.Close()
		return nil, err
	}
	return f, nil
}

// OpenBytes reads a checkpoint held in memory; tensor data may alias b.
func OpenBytes(name string, b []byte) (*File, error) { return newFile(name, &mmap.Region{Data: b}) }

// ReadHeader lists the tensors of the named checkpoint: it decodes the pickle and the zip
// directory only, never a storage.
func ReadHeader(path string) ([]weights.TensorInfo, error) {
	f, err := Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Tensors(), nil
}

func (f *File) fail(tensor string, off int64, format string, args ...any) error {
	return &weights.FormatError{Format: "torch", File: f.name, Tensor: tensor, Offset: off, Msg: fmt.Sprintf(format, args...)}
}

func (f *File) unsupported(format string, args ...any) error {
	return &weights.UnsupportedError{Format: "torch", File: f.name, Offset: 0, Msg: fmt.Sprintf(format, args...)}
}

func newFile(name string, r *mmap.Region) (*File, error) {
	f := &File{name: name, region: r, entries: map[string]*zip.File{}, tensors: map[string]*TensorRef{}}
	data := r.Data
	switch {
	case len(data) >= 2 && data[0] == 0x80 && data[1] <= 5:
		if err := f.openLegacy(); err != nil {
			return nil, err
		}
		return f.finish()
	case len(data) > 262 && string(data[257:262]) == "ustar":
		return nil, f.unsupported("tar-based torch serialization")
	case len(data) < 4 || string(data[:4]) != "PK\x03\x04":
		return nil, f.fail("", 0, "not a zip archive (PyTorch checkpoints since 1.6 are)")
	}
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, f.fail("", -1, "zip: %v", err)
	}
	pkl := ""
	for _, e := range zr.File {
		f.entries[e.Name] = e
		if strings.HasSuffix(e.Name, "/data.pkl") && strings.Count(e.Name, "/") == 1 {
			if pkl != "" {
				return nil, f.fail("", -1, "two pickles, %s and %s", pkl, e.Name)
			}
			pkl = e.Name
		}
	}
	if pkl == "" {
		return nil, f.fail("", -1, "no <archive>/data.pkl in the zip")
	}
	f.prefix = strings.TrimSuffix(pkl, "data.pkl")
	if bo, ok := f.entries[f.prefix+"byteorder"]; ok {
		b, err := f.entryBytes(bo, 16)
		if err != nil {
			return nil, err
		}
		if s := strings.TrimSpace(string(b)); s != "little" {
			return nil, f.unsupported("byte order %q", s)
		}
	}
	pb, err := f.entryBytes(f.entries[pkl], 1<<30)
	if err != nil {
		return nil, err
	}
	storages := map[string]*Storage{}
	f.root, err = Unpickle(f.name, pb, func(pid any) (any, error) { return f.loadStorage(pid, storages) })
	if err != nil {
		return nil, err
	}
	return f.finish()
}

// finish collects and checks the state dict's tensors once the pickle is decoded.
func (f *File) finish() (*File, error) {
	root, ok := f.root.(*Dict)
	if !ok {
		return nil, f.fail("", -1, "pickle holds %T, not a dict", f.root)
	}
	f.collect(stateDict(root), "", 0)
	for _, n := range f.names {
		if err := f.checkTensor(n, f.tensors[n]); err != nil {
			return nil, err
		}
	}
	return f, nil
}

// stateDict picks the tensors' dict as ComfyUI's comfy.utils.load_torch_file does: the
// "state_dict" entry if present, else the only value when it is itself a dict, else the
// root.
func stateDict(root *Dict) *Dict {
	if v, ok := root.Get("state_dict"); ok {
		if d, ok := v.(*Dict); ok {
			return d
		}
	}
	if root.Len() == 1 {
		if d, ok := root.Values[0].(*Dict); ok {
			return d
		}
	}
	return root
}

// collect records the tensors of d, flattening nested dicts with "." (so a textual
// inversion embedding lists "string_to_param.*"). Non-tensor values are skipped.
func (f *File) collect(d *Dict, prefix string, depth int) {
	if depth > maxNesting {
		return
	}
	for i, k := range d.Keys {
		ks, ok := k.(string)
		if !ok {
			continue
		}
		switch v := d.Values[i].(type) {
		case *TensorRef:
			if _, dup := f.tensors[prefix+ks]; !dup {
				f.names = append(f.names, prefix+ks)
				f.tensors[prefix+ks] = v
			}
		case *Dict:
			f.collect(v, prefix+ks+".", depth+1)
		}
	}
}

// loadStorage resolves a persistent id ('storage', storage_type, key, location, numel),
// as torch.serialization's persistent_load does, without reading the bytes.
func (f *File) loadStorage(pid any, seen map[string]*Storage) (any, error) {
	t, ok := pid.(Tuple)
	if !ok || len(t) != 5 || t[0] != "storage" {
		return nil, fmt.Errorf("persistent id %v is not a ('storage', type, key, location, numel) tuple", pid)
	}
	g, ok1 := t[1].(Global)
	key, ok2 := t[2].(string)
	loc, _ := t[3].(string)
	numel, ok3 := t[4].(int64)
	if !ok1 || !ok2 || !ok3 || numel < 0 {
		return nil, fmt.Errorf("persistent id %v has bad fields", pid)
	}
	dt, ok := storageDTypes[g.Name]
	if !ok || g.Module != "torch" {
		return nil, fmt.Errorf("storage type %s", g)
	}
	if s, ok := seen[key]; ok {
		if s.DType != dt {
			return nil, fmt.Errorf("storage %q used as %s and %s", key, s.DType, dt)
		}
		return s, nil
	}
	e, ok := f.entries[f.prefix+"data/"+key]
	if !ok {
		return nil, fmt.Errorf("storage %q: no %sdata/%s in the zip", key, f.prefix, key)
	}
	if numel > math.MaxInt64/8 || uint64(numel)*uint64(dt.ElemSize()) > e.UncompressedSize64 {
		return nil, fmt.Errorf("storage %q: %d elements of %s need more than its %d bytes", key, numel, dt, e.UncompressedSize64)
	}
	s := &Storage{DType: dt, Key: key, Location: loc, Numel: numel}
	seen[key] = s
	return s, nil
}

// checkTensor verifies the strided view lies inside its storage.
func (f *File) checkTensor(name string, t *TensorRef) error {
	last := t.Offset
	for i, n := range t.Shape {
		if n == 0 {
			return nil
		}
		if t.Stride[i] != 0 && n-1 > (math.MaxInt64-last)/t.Stride[i] {
			return f.fail(name, -1, "shape %v stride %v overflow", t.Shape, t.Stride)
		}
		last += (n - 1) * t.Stride[i]
	}
	if last >= t.Storage.Numel {
		return f.fail(name, -1, "view (offset %d, shape %v, stride %v) reaches element %d of a %d-element storage %q", t.Offset, t.Shape, t.Stride, last, t.Storage.Numel, t.Storage.Key)
	}
	if _, ok := weights.ShapeElements(t.Shape, math.MaxInt64/8); !ok {
		return f.fail(name, -1, "shape %v overflows", t.Shape)
	}
	return nil
}

// entryBytes returns an entry's bytes: a slice of the mapping for a stored entry, a
// decompressed copy otherwise (at most limit bytes).
func (f *File) entryBytes(e *zip.File, limit uint64) ([]byte, error) {
	if e.UncompressedSize64 > limit {
		return nil, f.fail("", -1, "zip entry %s of %d bytes is too large", e.Name, e.UncompressedSize64)
	}
	if e.Method == zip.Store && e.CompressedSize64 == e.UncompressedSize64 {
		off, err := e.DataOffset()
		if err != nil {
			return nil, f.fail("", -1, "zip entry %s: %v", e.Name, err)
		}
		end := uint64(off) + e.UncompressedSize64
		if off < 0 || end > uint64(len(f.region.Data)) {
			return nil, f.fail("", off, "zip entry %s runs past the end of the file", e.Name)
		}
		return f.region.Data[off:end:end], nil
	}
	// Deflate cannot expand data more than 1032:1, so a larger claimed size is a lie (a
	// zip bomb) and is refused before anything is inflated.
	if e.UncompressedSize64 > e.CompressedSize64*1032+1024 {
		return nil, f.fail("", -1, "zip entry %s claims %d bytes from %d compressed", e.Name, e.UncompressedSize64, e.CompressedSize64)
	}
	rc, err := e.Open()
	if err != nil {
		return nil, f.fail("", -1, "zip entry %s: %v", e.Name, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, int64(e.UncompressedSize64)+1))
	if err != nil || uint64(len(b)) != e.UncompressedSize64 {
		return nil, f.fail("", -1, "zip entry %s: %d bytes, want %d: %v", e.Name, len(b), e.UncompressedSize64, err)
	}
	return b, nil
}

// Name returns the path the file was opened with.
func (f *File) Name() string { return f.name }

// Root returns the decoded pickle: a *Dict holding the state dict and whatever else the
// checkpoint saved (global_step, ...). It must not be modified.
func (f *File) Root() any { return f.root }

// Tensors lists the state dict's tensors in pickle order. Offset is the absolute file
// offset of the data when the tensor is contiguous in a stored (uncompressed) entry,
// -1 otherwise.
func (f *File) Tensors() []weights.TensorInfo {
	out := make([]weights.TensorInfo, 0, len(f.names))
	for _, n := range f.names {
		out = append(out, f.info(n, f.tensors[n]))
	}
	return out
}

func (f *File) info(name string, t *TensorRef) weights.TensorInfo {
	es := int64(t.Storage.DType.ElemSize())
	n, _ := weights.ShapeElements(t.Shape, math.MaxInt64/8)
	info := weights.TensorInfo{Name: name, DType: t.Storage.DType, Shape: t.Shape, Offset: -1, Size: n * es}
	if f.legacy != nil {
		if contiguous(t) {
			info.Offset = f.legacyAt[t.Storage.Key] + (t.Storage.Base+t.Offset)*es
		}
		return info
	}
	if e := f.entries[f.prefix+"data/"+t.Storage.Key]; e != nil && e.Method == zip.Store && contiguous(t) {
		if off, err := e.DataOffset(); err == nil {
			info.Offset = off + t.Offset*es
		}
	}
	return info
}

// contiguous reports whether the view is row-major without gaps (dims of size 1 may
// have any stride).
func contiguous(t *TensorRef) bool {
	want := int64(1)
	for i := len(t.Shape) - 1; i >= 0; i-- {
		if t.Shape[i] != 1 && t.Stride[i] != want {
			return false
		}
		want *= t.Shape[i]
	}
	return true
}

// Tensor is one tensor's description and its bytes, row-major, little-endian.
type Tensor struct {
	weights.TensorInfo
	Data []byte
}

// Float32 converts the tensor to float32 (see weights.ToFloat32).
func (t Tensor) Float32() ([]float32, error) {
	out := make([]float32, t.NumElements())
	if err := weights.ToFloat32(out, t.Data, t.DType); err != nil {
		return nil, fmt.Errorf("torch: tensor %q: %w", t.Name, err)
	}
	return out, nil
}

// Tensor returns the named tensor. A contiguous tensor in a stored entry aliases the
// mapping; a strided view or a compressed entry is copied.
func (f *File) Tensor(name string) (Tensor, error) {
	t, ok := f.tensors[name]
	if !ok {
		return Tensor{}, fmt.Errorf("torch: %s: no tensor %q", f.name, name)
	}
	return f.read(name, t)
}

// RefTensor returns a tensor found in Root outside the state dict's string-keyed
// dicts (in a list, or under an integer key: A1111 hypernetworks keep their layers
// so), under name for errors; the view is checked against its storage as Open checks
// the state dict's.
func (f *File) RefTensor(name string, t *TensorRef) (Tensor, error) {
	if t == nil || t.Storage == nil {
		return Tensor{}, f.fail(name, -1, "no tensor")
	}
	if err := f.checkTensor(name, t); err != nil {
		return Tensor{}, err
	}
	return f.read(name, t)
}

func (f *File) read(name string, t *TensorRef) (Tensor, error) {
	if f.region.Data == nil {
		return Tensor{}, fmt.Errorf("torch: %s: file is closed", f.name)
	}
	info := f.info(name, t)
	var raw []byte
	if f.legacy != nil {
		raw = f.legacy[t.Storage.Key]
	} else {
		e := f.entries[f.prefix+"data/"+t.Storage.Key]
		if e == nil {
			return Tensor{}, f.fail(name, -1, "storage %q is not in the archive", t.Storage.Key)
		}
		var err error
		if raw, err = f.entryBytes(e, math.MaxInt64); err != nil {
			return Tensor{}, err
		}
	}
	es := int64(t.Storage.DType.ElemSize())
	if es <= 0 || int64(len(raw))/es < t.Storage.Base+t.Storage.Numel {
		return Tensor{}, f.fail(name, -1, "storage %q holds %d bytes, fewer than its %d elements", t.Storage.Key, len(raw), t.Storage.Numel)
	}
	raw = raw[t.Storage.Base*es : (t.Storage.Base+t.Storage.Numel)*es]
	if info.Size == 0 {
		return Tensor{TensorInfo: info, Data: []byte{}}, nil
	}
	if contiguous(t) {
		start := t.Offset * es
		return Tensor{TensorInfo: info, Data: raw[start : start+info.Size : start+info.Size]}, nil
	}
	out := make([]byte, 0, info.Size)
	idx := make([]int64, len(t.Shape))
	for {
		pos := t.Offset
		for i, k := range idx {
			pos += k * t.Stride[i]
		}
		out = append(out, raw[pos*es:(pos+1)*es]...)
		d := len(idx) - 1
		for ; d >= 0; d-- {
			idx[d]++
			if idx[d] < t.Shape[d] {
				break
			}
			idx[d] = 0
		}
		if d < 0 {
			break
		}
	}
	return Tensor{TensorInfo: info, Data: out}, nil
}

// Mapped reports whether the file is memory-mapped rather than read into memory.
func (f *File) Mapped() bool { return f.region.Mapped() }

// Close releases the mapping; tensors returned earlier become invalid.
func (f *File) Close() error { return f.region.Close() }

// Verify checks the CRC-32 of every zip entry against the archive's directory, reading
// the whole file: Open does not, so that opening stays cheap. The legacy format has no
// checksums and always passes.
func (f *File) Verify() error {
	if f.legacy != nil {
		return nil
	}
	for _, e := range f.entries {
		b, err := f.entryBytes(e, math.MaxInt64)
		if err != nil {
			return err
		}
		if sum := crc32.ChecksumIEEE(b); sum != e.CRC32 {
			off, _ := e.DataOffset()
			return f.fail("", off, "zip entry %s: CRC-32 %08x, directory says %08x (corrupt file)", e.Name, sum, e.CRC32)
		}
	}
	return nil
}
