package server

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/executor"
	"github.com/forgeflow/forgeflow/nodes"
	"github.com/forgeflow/forgeflow/nodes/builtin"
)

// BenchmarkPostPrompt measures the route's own cost (parsing, validation, answer) over
// a queue that stores nothing (the durable push is BenchmarkPushAck of executor/store).
func BenchmarkPostPrompt(b *testing.B) {
	reg := nodes.NewRegistry()
	if err := builtin.Register(reg, builtin.Options{}); err != nil {
		b.Fatal(err)
	}
	eng, err := executor.New(executor.Options{Registry: reg, Queue: discardQueue{}})
	if err != nil {
		b.Fatal(err)
	}
	ts := newTestServer(b, func(o *Options) { o.Engine = eng })
	body := `{"client_id": "c", "prompt": {
		"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
		"2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
		"3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}}}}`
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		ts.ServeHTTP(rec, httptest.NewRequest("POST", "/prompt", strings.NewReader(body)))
		if rec.Code != 200 {
			b.Fatal(rec.Code, rec.Body)
		}
	}
}

// discardQueue accepts every push and stores nothing.
type discardQueue struct{ executor.Queue }

func (discardQueue) Push(ctx context.Context, job *executor.Job, opts executor.PushOptions) (float64, error) {
	return 0, nil
}
func (discardQueue) Remaining(ctx context.Context) (int, error) { return 0, nil }

// BenchmarkObjectInfo measures GET /object_info over the built-in nodes.
func BenchmarkObjectInfo(b *testing.B) {
	reg := nodes.NewRegistry()
	if err := builtin.Register(reg, builtin.Options{}); err != nil {
		b.Fatal(err)
	}
	ts := newTestServer(b, func(o *Options) { o.Nodes = reg })
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		ts.ServeHTTP(rec, httptest.NewRequest("GET", "/object_info", nil))
		if rec.Code != 200 {
			b.Fatal(rec.Code)
		}
	}
}

// BenchmarkJobsList measures GET /api/jobs?limit=20 over a full history (10,000
// finished prompts with one saved image each, in the bbolt store): the route reads and
// summarises every entry to filter and sort, so this is its worst case.
func BenchmarkJobsList(b *testing.B) {
	ts := newTestServer(b, nil)
	ctx := context.Background()
	img := []any{map[string]any{"filename": "ComfyUI_00001_.png", "subfolder": "", "type": "output"}}
	for i := range executor.DefaultMaxHistory {
		e := &executor.HistoryEntry{
			Prompt:  executor.Job{ID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i), Number: float64(i), ExtraData: map[string]any{"create_time": int64(i)}},
			Outputs: map[string]map[string]any{"9": {"images": img}},
			Status: executor.Status{StatusStr: executor.StatusSuccess, Completed: true, Messages: []executor.Message{
				{Event: executor.EventExecutionStart, Data: executor.ExecutionStartData{Timestamp: int64(i)}},
				{Event: executor.EventExecutionSuccess, Data: executor.ExecutionSuccessData{Timestamp: int64(i + 5)}}}},
			Meta: map[string]executor.NodeMeta{},
		}
		if err := ts.queue.PutHistory(ctx, e); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		ts.ServeHTTP(rec, httptest.NewRequest("GET", "/api/jobs?limit=20", nil))
		if rec.Code != 200 {
			b.Fatal(rec.Code, rec.Body)
		}
	}
}
