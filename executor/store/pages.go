package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"strings"
)

// A reader of bbolt's file format (go.etcd.io/bbolt, file format version 2) that reads
// pages with ReadAt instead of through bbolt's memory map, so that a damaged file can
// be checked and read without the risk that bbolt takes on trust: bbolt follows page
// numbers and offsets from the file into its map, and a bad one is a fault that kills
// the process (a file cut to half its size crashed forgeflow at every start).
//
// Layout (bbolt internal/common, native byte order): a page starts with a 16-byte
// header {id uint64, flags uint16, count uint16, overflow uint32}; pages 0 and 1 are
// meta pages {magic, version, pageSize, flags uint32; root bucket {root pgid, sequence
// uint64}; freelist, pgid (the high-water mark), txid, checksum uint64}, the checksum
// being FNV-64a of the meta's first 56 bytes. A branch page holds count elements {pos,
// ksize uint32, pgid uint64}, a leaf page count elements {flags, pos, ksize, vsize
// uint32}, each pos counted from the element itself; a leaf element with flag 1 is a
// bucket whose value is {root pgid, sequence uint64}, followed by the bucket's page
// inline when root is 0. A page with overflow n spans n+1 pages.

const (
	boltMagic   = 0xED0CDAED
	boltVersion = 2

	pageHeaderSize = 16
	elemSize       = 16
	metaSize       = 64

	flagBranch   = 0x01
	flagLeaf     = 0x02
	flagMeta     = 0x04
	flagFreelist = 0x10
	bucketLeaf   = 0x01

	// maxTreeDepth bounds a walk down the B+tree (real trees are a few levels deep).
	maxTreeDepth = 64
	// maxPageSpan bounds the bytes one page (with its overflow) may span.
	maxPageSpan = 1 << 30
)

var native = binary.NativeEndian

// boltMeta is a meta page's content.
type boltMeta struct {
	pageSize uint32
	root     uint64
	freelist uint64
	hwm      uint64 // pages in use: every page id is below it
	txid     uint64
}

// errNotBolt means neither meta page carries bbolt's magic: not a queue database.
var errNotBolt = errors.New("not a bbolt database (no valid meta page)")

// boltFile is an open file read page by page.
type boltFile struct {
	f    *os.File
	size int64
	meta boltMeta
	// metaOK is false when no meta page passed its checksum and the most plausible
	// one was taken for salvage.
	metaOK bool
}

// openBoltFile opens path and reads its meta pages: the valid one with the highest
// transaction id, or, when neither is valid but one carries bbolt's magic, the most
// plausible one (metaOK false). A file with no bbolt magic is errNotBolt.
func openBoltFile(path string) (*boltFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	b := &boltFile{f: f, size: st.Size()}
	var best *boltMeta
	var plausible *boltMeta
	for _, off := range metaOffsets(f) {
		m, valid, magic := readMeta(f, off)
		switch {
		case valid && (best == nil || m.txid > best.txid):
			best = &m
		case magic && (plausible == nil || m.txid > plausible.txid):
			plausible = &m
		}
	}
	switch {
	case best != nil:
		b.meta, b.metaOK = *best, true
	case plausible != nil:
		b.meta = *plausible
	default:
		f.Close()
		return nil, errNotBolt
	}
	return b, nil
}

func (b *boltFile) close() { b.f.Close() }

// metaOffsets are where the meta pages may be: page 0, and page 1 at the page size
// page 0 declares or at the common page sizes.
func metaOffsets(f *os.File) []int64 {
	offs := []int64{0}
	if m, _, magic := readMeta(f, 0); magic && m.pageSize >= 512 && m.pageSize <= 1<<16 {
		offs = append(offs, int64(m.pageSize))
	}
	return append(offs, 4096, 8192, 16384, 65536)
}

// readMeta reads a meta page at off: its content, whether it is valid (magic, version,
// checksum, sane sizes) and whether it at least carries the magic.
func readMeta(f *os.File, off int64) (m boltMeta, valid, magic bool) {
	var buf [pageHeaderSize + metaSize]byte
	if _, err := f.ReadAt(buf[:], off); err != nil {
		return m, false, false
	}
	p := buf[pageHeaderSize:]
	magic = native.Uint32(p[0:]) == boltMagic
	m = boltMeta{
		pageSize: native.Uint32(p[8:]),
		root:     native.Uint64(p[16:]),
		freelist: native.Uint64(p[32:]),
		hwm:      native.Uint64(p[40:]),
		txid:     native.Uint64(p[48:]),
	}
	h := fnv.New64a()
	h.Write(p[:56])
	valid = magic && native.Uint16(buf[8:]) == flagMeta && native.Uint32(p[4:]) == boltVersion &&
		h.Sum64() == native.Uint64(p[56:]) && m.pageSize >= 512 && m.pageSize <= 1<<16 && m.pageSize&(m.pageSize-1) == 0 &&
		m.root < m.hwm && m.hwm >= 2
	return m, valid, magic
}

// page is one page read from the file, with its overflow.
type page struct {
	id    uint64
	flags uint16
	count int
	data  []byte // the whole span, header included
}

// readPage reads page id, checking what bbolt would take on trust: the id is below the
// high-water mark and inside the file, the header names the same id, and the page
// with its overflow stays below the mark.
func (b *boltFile) readPage(id uint64) (*page, error) {
	ps := uint64(b.meta.pageSize)
	if id < 2 || id >= b.meta.hwm {
		return nil, fmt.Errorf("page %d: out of range [2, %d)", id, b.meta.hwm)
	}
	if (id+1)*ps > uint64(b.size) {
		return nil, fmt.Errorf("page %d: past the end of the file (%d bytes)", id, b.size)
	}
	hdr := make([]byte, pageHeaderSize)
	if _, err := b.f.ReadAt(hdr, int64(id*ps)); err != nil {
		return nil, fmt.Errorf("page %d: %w", id, err)
	}
	p := &page{id: native.Uint64(hdr), flags: native.Uint16(hdr[8:]), count: int(native.Uint16(hdr[10:]))}
	overflow := uint64(native.Uint32(hdr[12:]))
	if p.id != id {
		return nil, fmt.Errorf("page %d: header says page %d", id, p.id)
	}
	if id+overflow >= b.meta.hwm || (id+overflow+1)*ps > uint64(b.size) || (overflow+1)*ps > maxPageSpan {
		return nil, fmt.Errorf("page %d: overflow of %d pages runs past the high-water mark or the file", id, overflow)
	}
	p.data = make([]byte, (overflow+1)*ps)
	if _, err := b.f.ReadAt(p.data, int64(id*ps)); err != nil && err != io.EOF {
		return nil, fmt.Errorf("page %d: %w", id, err)
	}
	return p, nil
}

// walker visits the key/values of a bbolt tree, checking every page it reads and
// skipping (and reporting) what is damaged.
type walker struct {
	b       *boltFile
	visited map[uint64]bool
	// visit is called for each key/value of a bucket (path: the bucket names from
	// the root); problem for each damaged page or element, with the bucket path.
	visit   func(path []string, k, v []byte)
	problem func(path []string, err error)
	// last is each bucket's last key seen (by its path joined with NUL): bbolt finds
	// keys by binary search, so a key out of order is one that Delete cannot remove.
	last map[string][]byte
}

// walk visits the whole file from its root bucket, and checks the freelist page.
func (b *boltFile) walk(visit func(path []string, k, v []byte), problem func(path []string, err error)) {
	w := &walker{b: b, visited: map[uint64]bool{0: true, 1: true}, visit: visit, problem: problem}
	if fl := b.meta.freelist; fl != ^uint64(0) {
		if p, err := b.readPage(fl); err != nil {
			problem(nil, fmt.Errorf("freelist: %w", err))
		} else if p.flags != flagFreelist {
			problem(nil, fmt.Errorf("freelist page %d: flags %#x", fl, p.flags))
		} else if err := b.checkFreelist(p); err != nil {
			problem(nil, err)
		} else {
			w.mark(p)
		}
	}
	w.tree(nil, b.meta.root, 0)
}

// checkFreelist checks that the freelist's ids fit in its page and are page ids
// (bbolt reads count ids from the page, the count being the first id when the header's
// count is 0xFFFF).
func (b *boltFile) checkFreelist(p *page) error {
	idx, count := uint64(0), uint64(p.count)
	if count == 0xFFFF {
		if len(p.data) < pageHeaderSize+8 {
			return fmt.Errorf("freelist page %d: no room for its count", p.id)
		}
		idx, count = 1, native.Uint64(p.data[pageHeaderSize:])
	}
	if count > uint64(len(p.data)) || pageHeaderSize+(idx+count)*8 > uint64(len(p.data)) {
		return fmt.Errorf("freelist page %d: %d ids do not fit", p.id, count)
	}
	for i := idx; i < idx+count; i++ {
		if id := native.Uint64(p.data[pageHeaderSize+i*8:]); id < 2 || id >= b.meta.hwm {
			return fmt.Errorf("freelist page %d: free page %d out of range", p.id, id)
		}
	}
	return nil
}

func (w *walker) mark(p *page) {
	for i := uint64(0); i < uint64(len(p.data))/uint64(w.b.meta.pageSize); i++ {
		w.visited[p.id+i] = true
	}
}

// tree walks the pages under id.
func (w *walker) tree(path []string, id uint64, depth int) {
	if depth > maxTreeDepth {
		w.problem(path, fmt.Errorf("page %d: tree deeper than %d", id, maxTreeDepth))
		return
	}
	if w.visited[id] {
		w.problem(path, fmt.Errorf("page %d: referenced twice", id))
		return
	}
	p, err := w.b.readPage(id)
	if err != nil {
		w.problem(path, err)
		return
	}
	w.mark(p)
	switch p.flags {
	case flagBranch:
		if pageHeaderSize+p.count*elemSize > len(p.data) {
			w.problem(path, fmt.Errorf("page %d: %d elements do not fit", id, p.count))
			return
		}
		for i := 0; i < p.count; i++ {
			e := pageHeaderSize + i*elemSize
			if _, err := span(p.data, e, native.Uint32(p.data[e:]), native.Uint32(p.data[e+4:])); err != nil {
				w.problem(path, fmt.Errorf("page %d: branch element %d: %w", id, i, err))
				continue
			}
			w.tree(path, native.Uint64(p.data[e+8:]), depth+1)
		}
	case flagLeaf:
		w.leaf(path, p.data, fmt.Sprintf("page %d", id), depth)
	default:
		w.problem(path, fmt.Errorf("page %d: not a branch or leaf page (flags %#x)", id, p.flags))
	}
}

// leaf visits the elements of a leaf page held in data (a page, or an inline bucket's
// page inside a value).
func (w *walker) leaf(path []string, data []byte, where string, depth int) {
	if len(data) < pageHeaderSize {
		w.problem(path, fmt.Errorf("%s: %d bytes", where, len(data)))
		return
	}
	if w.last == nil {
		w.last = map[string][]byte{}
	}
	count := int(native.Uint16(data[10:]))
	if pageHeaderSize+count*elemSize > len(data) {
		w.problem(path, fmt.Errorf("%s: %d elements do not fit", where, count))
		return
	}
	for i := 0; i < count; i++ {
		e := pageHeaderSize + i*elemSize
		flags, pos := native.Uint32(data[e:]), native.Uint32(data[e+4:])
		ksize, vsize := native.Uint32(data[e+8:]), native.Uint32(data[e+12:])
		kv, err := span(data, e, pos, ksize+vsize)
		if err != nil || ksize+vsize < ksize {
			w.problem(path, fmt.Errorf("%s: leaf element %d: key or value outside the page", where, i))
			continue
		}
		k, v := kv[:ksize], kv[ksize:]
		bucket := strings.Join(path, "\x00")
		if prev, ok := w.last[bucket]; ok && bytes.Compare(k, prev) <= 0 {
			w.problem(path, fmt.Errorf("%s: leaf element %d: key out of order", where, i))
		}
		w.last[bucket] = k
		if flags&bucketLeaf == 0 {
			w.visit(path, k, v)
			continue
		}
		sub := append(append([]string(nil), path...), string(k))
		if len(v) < 16 {
			w.problem(sub, fmt.Errorf("%s: bucket header of %d bytes", where, len(v)))
			continue
		}
		if root := native.Uint64(v); root != 0 {
			w.tree(sub, root, depth+1)
		} else {
			w.leaf(sub, v[16:], where+" inline bucket "+string(k), depth+1)
		}
	}
}

// span returns data[at+pos : at+pos+n], or an error when it is not inside data.
func span(data []byte, at int, pos, n uint32) ([]byte, error) {
	start := uint64(at) + uint64(pos)
	end := start + uint64(n)
	if end > uint64(len(data)) {
		return nil, fmt.Errorf("bytes %d..%d outside the %d of the page", start, end, len(data))
	}
	return data[start:end], nil
}
