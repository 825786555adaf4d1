package server

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"

	"github.com/forgeflow/forgeflow/graph"
)

// fakeQueue records what the routes asked of it.
type fakeQueue struct {
	mu          sync.Mutex
	submitted   []PromptRequest
	reject      *Rejection
	submitErr   error
	number      float64
	running     []json.RawMessage
	pending     []json.RawMessage
	history     []HistoryEntry
	cleared     bool
	deleted     []string
	interrupted []string
	histCleared bool
	histDeleted []string
	histArgs    [2]int
	freed       int
}

func (q *fakeQueue) Submit(ctx context.Context, req PromptRequest) (Submitted, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.reject != nil {
		return Submitted{}, q.reject
	}
	if q.submitErr != nil {
		return Submitted{}, q.submitErr
	}
	q.submitted = append(q.submitted, req)
	n := q.number
	if req.Number != nil {
		n = *req.Number
	} else if req.Front {
		n = -n
	}
	q.number++
	return Submitted{Number: n}, nil
}

func (q *fakeQueue) Items(ctx context.Context) ([]json.RawMessage, []json.RawMessage, error) {
	return q.running, q.pending, nil
}
func (q *fakeQueue) Remaining() int { return len(q.running) + len(q.pending) }
func (q *fakeQueue) Clear(ctx context.Context) error {
	q.cleared = true
	return nil
}
func (q *fakeQueue) Delete(ctx context.Context, ids []string) error {
	q.deleted = append(q.deleted, ids...)
	return nil
}
func (q *fakeQueue) Interrupt(id string) { q.interrupted = append(q.interrupted, id) }
func (q *fakeQueue) History(ctx context.Context, maxItems, offset int) ([]HistoryEntry, error) {
	q.histArgs = [2]int{maxItems, offset}
	return q.history, nil
}
func (q *fakeQueue) HistoryItem(ctx context.Context, id string) (HistoryEntry, bool, error) {
	for _, e := range q.history {
		if e.PromptID == id {
			return e, true, nil
		}
	}
	return HistoryEntry{}, false, nil
}
func (q *fakeQueue) ClearHistory(ctx context.Context) error {
	q.histCleared = true
	return nil
}
func (q *fakeQueue) DeleteHistory(ctx context.Context, ids []string) error {
	q.histDeleted = append(q.histDeleted, ids...)
	return nil
}
func (q *fakeQueue) FreeMemory() { q.freed++ }

// fakeSchemas serves two schemas for /object_info.
type fakeSchemas map[string]*graph.Schema

func (f fakeSchemas) Names() []string {
	var out []string
	for k := range f {
		out = append(out, k)
	}
	return out
}
func (f fakeSchemas) Schema(c string) (*graph.Schema, bool) {
	s, ok := f[c]
	return s, ok
}

type testServer struct {
	*Server
	dirs  Dirs
	queue *fakeQueue
	base  string
}

// newTestServer builds a server over fresh folders. opt may adjust the options.
func newTestServer(t testing.TB, opt func(*Options)) *testServer {
	t.Helper()
	base := t.TempDir()
	dirs := Dirs{
		Output: filepath.Join(base, "output"),
		Input:  filepath.Join(base, "input"),
		Temp:   filepath.Join(base, "temp"),
		User:   filepath.Join(base, "user"),
	}
	q := &fakeQueue{}
	opts := Options{Dirs: dirs, Queue: q, Version: "0.3.64"}
	if opt != nil {
		opt(&opts)
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &testServer{Server: s, dirs: dirs, queue: q, base: base}
}

// do runs one request through the handler.
func (ts *testServer) do(t *testing.T, method, target string, body io.Reader, hdr ...string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, target, body)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	ts.ServeHTTP(rec, req)
	return rec
}

// jsonEqual compares a JSON answer with the expected JSON text, ignoring formatting.
func jsonEqual(t *testing.T, got []byte, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("answer is not JSON: %v: %s", err, got)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("bad expected JSON: %v", err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Errorf("JSON mismatch\n got: %s\nwant: %s", got, want)
	}
}

// isJSONError checks a 4xx/5xx answer: the status and a JSON body with "error".
func isJSONError(t *testing.T, rec *httptest.ResponseRecorder, status int) {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("status %d, want %d; body %s", rec.Code, status, rec.Body)
	}
	var e map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
		t.Fatalf("error answer is not JSON: %s", rec.Body)
	}
	if _, ok := e["error"]; !ok {
		t.Fatalf("error answer has no \"error\" key: %s", rec.Body)
	}
}

// pngBytes encodes a w×h NRGBA image whose pixel (x, y) is f(x, y).
func pngBytes(t *testing.T, w, h int, f func(x, y int) color.NRGBA) []byte {
	t.Helper()
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.SetNRGBA(x, y, f(x, y))
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}
