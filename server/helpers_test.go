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
	"testing"

	"github.com/forgeflow/forgeflow/executor"
	"github.com/forgeflow/forgeflow/executor/store"
	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// blockNode is an output node that runs until it is cancelled.
type blockNode struct{}

func (blockNode) Schema() *graph.Schema {
	return &graph.Schema{Name: "Block", OutputNode: true}
}

func (blockNode) Run(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
	<-ctx.Done()
	return nodes.Result{}, ctx.Err()
}

// sinkNode is the output node of the route tests' prompts: it takes two INT widgets
// and does nothing, so a prompt of it validates and can be queued.
type sinkNode struct{}

func (sinkNode) Schema() *graph.Schema {
	return &graph.Schema{Name: "Sink", OutputNode: true, Inputs: []graph.Input{
		{Name: "width", Type: graph.TypeInt}, {Name: "seed", Type: graph.TypeInt}}}
}

func (sinkNode) Run(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
	return nodes.Result{}, nil
}

// sinkPrompt is a valid prompt of one Sink with a seed that needs all 64 bits.
const sinkPrompt = `{"1": {"class_type": "Sink", "inputs": {"width": 8, "seed": 18446744073709551615}}}`

// newTestEngine builds an engine over a bbolt store in dir and a registry holding
// sinkNode and extra. wrap, when set, wraps the store the engine is given (to inject
// failures). The worker is not started: prompts stay pending unless the test runs it.
func newTestEngine(t testing.TB, dir string, wrap func(executor.Queue) executor.Queue, extra ...nodes.Node) *executor.Engine {
	t.Helper()
	reg := nodes.NewRegistry()
	for _, n := range append([]nodes.Node{sinkNode{}}, extra...) {
		if err := reg.Register(n); err != nil {
			t.Fatal(err)
		}
	}
	st, err := store.Open(filepath.Join(dir, "queue.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	var q executor.Queue = st
	if wrap != nil {
		q = wrap(st)
	}
	eng, err := executor.New(executor.Options{Registry: reg, Queue: q})
	if err != nil {
		t.Fatal(err)
	}
	return eng
}

// runWorker runs eng's worker until the test ends.
func runWorker(t testing.TB, eng *executor.Engine) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { eng.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

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
	dirs   Dirs
	engine *executor.Engine
	queue  executor.Queue // the engine's store, for setting up and checking state
	base   string
}

// newTestServer builds a server over fresh folders and an engine (newTestEngine) whose
// worker does not run. opt may adjust the options.
func newTestServer(t testing.TB, opt func(*Options)) *testServer {
	t.Helper()
	base := t.TempDir()
	dirs := Dirs{
		Output: filepath.Join(base, "output"),
		Input:  filepath.Join(base, "input"),
		Temp:   filepath.Join(base, "temp"),
		User:   filepath.Join(base, "user"),
	}
	eng := newTestEngine(t, base, nil)
	opts := Options{Dirs: dirs, Engine: eng, Version: "0.3.64"}
	if opt != nil {
		opt(&opts)
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ts := &testServer{Server: s, dirs: dirs, base: base}
	if opts.Engine != nil {
		ts.engine, ts.queue = opts.Engine, opts.Engine.Queue()
	}
	return ts
}

// pending returns the pending jobs, in queue order.
func (ts *testServer) pending(t testing.TB) []*executor.Job {
	t.Helper()
	_, p, err := ts.queue.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return p
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
