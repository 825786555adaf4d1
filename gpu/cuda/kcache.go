package cuda

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
)

// cacheKey identifies compiled device code: the source (by hash), the device's compute
// capability and the compiler. A new driver can load the same CUBIN, so the driver is
// not part of the key; a new NVRTC may compile differently, so it is.
type cacheKey struct {
	Module     module
	SourceHash string // hex SHA-256 of the module's full source
	CC         int    // compute capability ×10, e.g. 90
	NVRTC      string // "major.minor"
}

// file is the cache file's name: readable, and unique per key.
func (k cacheKey) file() string {
	return fmt.Sprintf("%s-%s-sm%d-nvrtc%s.bin", k.Module, k.SourceHash[:16], k.CC, k.NVRTC)
}

// line is the key as written inside the file, checked on read (the file name holds a
// prefix of the hash only).
func (k cacheKey) line() string {
	return fmt.Sprintf("%s %s sm_%d nvrtc %s", k.Module, k.SourceHash, k.CC, k.NVRTC)
}

const cacheMagic = "forgeflow-cuda-kernels 1\n"

// kernelCache keeps compiled modules on disk so that only the first start on a device
// pays NVRTC's compile time. A missing, unreadable, truncated or foreign file is a miss
// (and is rewritten); a cache that cannot be written costs a compile per start, nothing
// else.
type kernelCache struct{ dir string }

// defaultCacheDir is the user's cache folder (XDG_CACHE_HOME, ~/.cache) plus
// forgeflow/cuda, or "" when the user has none.
func defaultCacheDir() string {
	d, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(d, "forgeflow", "cuda")
}

// load returns the cached image for k, ok false on a miss.
func (c kernelCache) load(k cacheKey) (image, bool) {
	if c.dir == "" {
		return image{}, false
	}
	data, err := os.ReadFile(filepath.Join(c.dir, k.file()))
	if err != nil {
		return image{}, false
	}
	rest, ok := bytes.CutPrefix(data, []byte(cacheMagic))
	if !ok {
		return image{}, false
	}
	line, rest, ok := bytes.Cut(rest, []byte("\n"))
	if !ok || string(line) != k.line() {
		return image{}, false
	}
	kind, rest, ok := bytes.Cut(rest, []byte("\n"))
	if !ok || (string(kind) != "cubin" && string(kind) != "ptx") {
		return image{}, false
	}
	size, body, ok := bytes.Cut(rest, []byte("\n"))
	var n int
	if !ok || func() bool { _, err := fmt.Sscanf(string(size), "%d", &n); return err != nil }() || n != len(body) || n == 0 {
		return image{}, false
	}
	return image{PTX: string(kind) == "ptx", Data: body}, true
}

// store writes img for k atomically (a temporary file renamed into place), so that two
// processes starting at once never read half a file.
func (c kernelCache) store(k cacheKey, img image) error {
	if c.dir == "" {
		return fmt.Errorf("cuda: no kernel cache folder")
	}
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return fmt.Errorf("cuda: kernel cache: %w", err)
	}
	kind := "cubin"
	if img.PTX {
		kind = "ptx"
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s%s\n%s\n%d\n", cacheMagic, k.line(), kind, len(img.Data))
	b.Write(img.Data)
	f, err := os.CreateTemp(c.dir, ".tmp-"+string(k.Module)+"-*")
	if err != nil {
		return fmt.Errorf("cuda: kernel cache: %w", err)
	}
	_, werr := f.Write(b.Bytes())
	cerr := f.Close()
	if werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(f.Name(), filepath.Join(c.dir, k.file()))
	}
	if werr != nil {
		os.Remove(f.Name())
		return fmt.Errorf("cuda: kernel cache: %w", werr)
	}
	return nil
}
