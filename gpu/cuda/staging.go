package cuda

import (
	"unsafe"
)

// staging is a ring of pinned (page-locked) host buffers through which uploads and
// downloads go: the copy engine reads and writes pinned memory directly, and an upload
// returns as soon as its bytes are in a pinned buffer, overlapping the transfer with the
// host's next work. Each buffer has an event that marks when its last copy finished.
// Where pinned memory cannot be had, copies go straight from pageable memory.
type staging struct {
	b      *Backend
	chunks []stageChunk
	next   int
}

type stageChunk struct {
	ptr unsafe.Pointer
	buf []byte
	ev  uintptr
}

const (
	stageChunks    = 4
	stageChunkSize = 8 << 20
)

// newStaging allocates the pinned ring; it runs inside Open with the context current.
func newStaging(b *Backend) *staging {
	s := &staging{b: b}
	d := b.drv
	for i := 0; i < stageChunks; i++ {
		var p unsafe.Pointer
		if d.cuMemHostAlloc(&p, stageChunkSize, 0) != 0 || p == nil {
			b.log.Warn("cuda: no pinned host memory, copies go through pageable memory")
			break
		}
		var ev uintptr
		if d.cuEventCreate(&ev, 2 /* CU_EVENT_DISABLE_TIMING */) != 0 {
			d.cuMemFreeHost(p)
			break
		}
		s.chunks = append(s.chunks, stageChunk{ptr: p, buf: unsafe.Slice((*byte)(p), stageChunkSize), ev: ev})
	}
	return s
}

// take returns the next chunk once its previous copy has finished.
func (s *staging) take() (*stageChunk, error) {
	c := &s.chunks[s.next]
	s.next = (s.next + 1) % len(s.chunks)
	return c, s.b.drv.check(s.b.drv.cuEventSynchronize(c.ev), "cuEventSynchronize")
}

// upload queues a copy of src to device address dst on the stream. Called under b.do.
func (s *staging) upload(dst uint64, src []byte) error {
	d := s.b.drv
	if len(src) == 0 {
		return nil
	}
	if len(s.chunks) == 0 {
		// pageable: the driver stages it and returns once src may be reused
		return d.check(d.cuMemcpyHtoDAsync(dst, unsafe.Pointer(&src[0]), uint64(len(src)), s.b.stream), "cuMemcpyHtoDAsync")
	}
	for off := 0; off < len(src); off += stageChunkSize {
		n := min(stageChunkSize, len(src)-off)
		c, err := s.take()
		if err != nil {
			return err
		}
		copy(c.buf, src[off:off+n])
		if err := d.check(d.cuMemcpyHtoDAsync(dst+uint64(off), c.ptr, uint64(n), s.b.stream), "cuMemcpyHtoDAsync"); err != nil {
			return err
		}
		if err := d.check(d.cuEventRecord(c.ev, s.b.stream), "cuEventRecord"); err != nil {
			return err
		}
	}
	return nil
}

// download copies n = len(dst) bytes from device address src into dst, after every
// earlier kernel on the stream. Called under b.do.
func (s *staging) download(dst []byte, src uint64) error {
	d := s.b.drv
	if len(dst) == 0 {
		return nil
	}
	if len(s.chunks) == 0 {
		if err := d.check(d.cuMemcpyDtoHAsync(unsafe.Pointer(&dst[0]), src, uint64(len(dst)), s.b.stream), "cuMemcpyDtoHAsync"); err != nil {
			return err
		}
		return d.check(d.cuStreamSynchronize(s.b.stream), "cuStreamSynchronize")
	}
	for off := 0; off < len(dst); off += stageChunkSize {
		n := min(stageChunkSize, len(dst)-off)
		c, err := s.take()
		if err != nil {
			return err
		}
		if err := d.check(d.cuMemcpyDtoHAsync(c.ptr, src+uint64(off), uint64(n), s.b.stream), "cuMemcpyDtoHAsync"); err != nil {
			return err
		}
		if err := d.check(d.cuEventRecord(c.ev, s.b.stream), "cuEventRecord"); err != nil {
			return err
		}
		if err := d.check(d.cuEventSynchronize(c.ev), "cuEventSynchronize"); err != nil {
			return err
		}
		copy(dst[off:off+n], c.buf[:n])
	}
	return nil
}

func (s *staging) close() {
	for _, c := range s.chunks {
		s.b.drv.cuEventSynchronize(c.ev)
		s.b.drv.cuMemFreeHost(c.ptr)
	}
	s.chunks = nil
}
