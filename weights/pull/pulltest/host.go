// Package pulltest is a model host for tests of downloads: an HTTP server on a
// loopback address that serves files the way Hugging Face and Civitai do (Range
// requests, a redirect to storage carrying X-Linked-Etag and X-Linked-Size,
// Content-Disposition names), and misbehaves on demand (a transfer cut short, a
// 404, a wrong digest, a web page instead of the file). Nothing here touches the
// network beyond the loopback interface.
package pulltest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

// File is one file the host serves.
type File struct {
	Data []byte
	// CutAfter, when positive, makes the first CutTimes transfers of the file stop
	// after that many bytes (the connection is closed mid-body).
	CutAfter int
	CutTimes int
	// NoRange makes the host ignore Range headers (always 200 with the whole file).
	NoRange bool
	// LinkedSHA256, when set, replaces the true digest in the redirect's X-Linked-Etag
	// (a host that lies, or a file changed since).
	LinkedSHA256 string
	// Disposition, when set, is sent as Content-Disposition's file name.
	Disposition string
	// Slow, when positive, pauses this long after every 64 KiB (for progress and
	// cancellation tests).
	Slow time.Duration
}

// Host is the test server. Its routes:
//
//	/OWNER/REPO/resolve/REV/NAME  302 to /storage/NAME with X-Linked-Etag (the SHA-256,
//	                             quoted) and X-Linked-Size, as Hugging Face answers
//	                             for large files
//	/storage/NAME, /files/NAME   the file, with Range support and a strong ETag
//	/api/download/models/NAME    the file under a path without a file name; the name
//	                             is in Content-Disposition (Civitai's shape)
//	/redirect/NAME               302 to /files/NAME
//	anything else                404
type Host struct {
	*httptest.Server

	mu       sync.Mutex
	files    map[string]*File
	requests []*http.Request
	cuts     map[string]int
}

// New starts a host on 127.0.0.1 (plain http) and closes it when the test ends.
func New(t testing.TB) *Host {
	h := &Host{files: map[string]*File{}, cuts: map[string]int{}}
	h.Server = httptest.NewServer(http.HandlerFunc(h.serve))
	t.Cleanup(h.Close)
	return h
}

// NewTLS is New over https, with the server's own certificate (use h.Client()).
func NewTLS(t testing.TB) *Host {
	h := &Host{files: map[string]*File{}, cuts: map[string]int{}}
	h.Server = httptest.NewTLSServer(http.HandlerFunc(h.serve))
	t.Cleanup(h.Close)
	return h
}

// Add serves f under name.
func (h *Host) Add(name string, f File) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.files[name] = &f
}

// Requests returns the requests received so far (method, URL and headers only).
func (h *Host) Requests() []*http.Request {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*http.Request(nil), h.requests...)
}

// SHA256 is the hex digest of data.
func SHA256(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

// Safetensors returns a real safetensors file of about size bytes: one F32 tensor of
// random values (seeded), so that downloads are checked as model files.
func Safetensors(t testing.TB, size int, seed uint64) []byte {
	t.Helper()
	n := max(size/4, 1)
	r := rand.New(rand.NewPCG(seed, 1))
	data := make([]byte, 4*n)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	var buf bytes.Buffer
	if err := safetensors.Write(&buf, []safetensors.Entry{{Name: "w", DType: weights.F32, Shape: []int64{int64(n)}, Data: data}}, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func (h *Host) serve(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	h.requests = append(h.requests, &http.Request{Method: r.Method, URL: r.URL, Header: r.Header.Clone(), Host: r.Host})
	h.mu.Unlock()
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/"), "/")
	last := parts[len(parts)-1]
	switch {
	case len(parts) >= 5 && parts[2] == "resolve":
		name := strings.Join(parts[4:], "/")
		f := h.file(name)
		if f == nil {
			http.NotFound(w, r)
			return
		}
		sum := SHA256(f.Data)
		if f.LinkedSHA256 != "" {
			sum = f.LinkedSHA256
		}
		w.Header().Set("X-Linked-Etag", `"`+sum+`"`)
		w.Header().Set("X-Linked-Size", strconv.Itoa(len(f.Data)))
		w.Header().Set("ETag", `"0123456789abcdef0123456789abcdef01234567"`)
		http.Redirect(w, r, "/storage/"+name, http.StatusFound)
	case len(parts) >= 2 && (parts[0] == "storage" || parts[0] == "files"):
		h.serveFile(w, r, strings.Join(parts[1:], "/"))
	case len(parts) == 4 && parts[0] == "api" && parts[1] == "download":
		h.serveFile(w, r, last)
	case len(parts) >= 2 && parts[0] == "redirect":
		http.Redirect(w, r, "/files/"+strings.Join(parts[1:], "/"), http.StatusFound)
	default:
		http.NotFound(w, r)
	}
}

func (h *Host) file(name string) *File {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.files[name]
}

func (h *Host) serveFile(w http.ResponseWriter, r *http.Request, name string) {
	f := h.file(name)
	if f == nil {
		http.NotFound(w, r)
		return
	}
	if f.Disposition != "" {
		w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", f.Disposition))
	}
	h.mu.Lock()
	cut := f.CutAfter > 0 && h.cuts[name] < f.CutTimes
	if cut {
		h.cuts[name]++
	}
	h.mu.Unlock()
	w.Header().Set("ETag", `"`+SHA256(f.Data)[:16]+`"`)
	if f.NoRange {
		r.Header.Del("Range")
	}
	if cut {
		w.Header().Set("Content-Length", strconv.Itoa(len(f.Data)))
		w.WriteHeader(http.StatusOK)
		w.Write(f.Data[:f.CutAfter])
		if fl, ok := w.(http.Flusher); ok {
			fl.Flush()
		}
		panic(http.ErrAbortHandler) // closes the connection mid-body
	}
	var rd = bytes.NewReader(f.Data)
	if f.Slow > 0 {
		http.ServeContent(&slowWriter{ResponseWriter: w, pause: f.Slow}, r, "", time.Time{}, rd)
		return
	}
	http.ServeContent(w, r, "", time.Time{}, rd)
}

// slowWriter pauses after every 64 KiB written.
type slowWriter struct {
	http.ResponseWriter
	pause time.Duration
	n     int
}

func (s *slowWriter) Write(b []byte) (int, error) {
	total := 0
	for len(b) > 0 {
		k := min(len(b), 64<<10-s.n)
		n, err := s.ResponseWriter.Write(b[:k])
		total += n
		s.n += n
		if err != nil {
			return total, err
		}
		b = b[k:]
		if s.n >= 64<<10 {
			s.n = 0
			if fl, ok := s.ResponseWriter.(http.Flusher); ok {
				fl.Flush()
			}
			time.Sleep(s.pause)
		}
	}
	return total, nil
}
