package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/forgeflow/forgeflow/executor"
	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// Client-chosen prompt ids of the tests: canonical UUIDs.
const (
	uuid1 = "5f0c8a52-1b7e-4c55-9a43-0d2c6f1e8b01"
	uuid2 = "5f0c8a52-1b7e-4c55-9a43-0d2c6f1e8b02"
	uuid3 = "5f0c8a52-1b7e-4c55-9a43-0d2c6f1e8b03"
	uuid4 = "5f0c8a52-1b7e-4c55-9a43-0d2c6f1e8b04"
	uuid5 = "5f0c8a52-1b7e-4c55-9a43-0d2c6f1e8b05"
	uuid6 = "5f0c8a52-1b7e-4c55-9a43-0d2c6f1e8b06"
	uuid7 = "5f0c8a52-1b7e-4c55-9a43-0d2c6f1e8b07"
)

func TestPostPrompt(t *testing.T) {
	const graphJSON = sinkPrompt
	tests := []struct {
		name   string
		setup  func(t *testing.T, ts *testServer)
		body   string
		status int
		want   string // expected JSON answer; "" to skip
		check  func(t *testing.T, job *executor.Job)
	}{
		{
			name: "accepted", status: 200, body: `{"prompt": ` + graphJSON + `, "client_id": "abc", "prompt_id": "` + uuid1 + `", "extra_data": {"extra_pnginfo": {"workflow": {}}, "create_time": 5}}`,
			want: `{"prompt_id": "` + uuid1 + `", "number": 0, "node_errors": {}}`,
			check: func(t *testing.T, job *executor.Job) {
				if job.ID != uuid1 || job.ClientID() != "abc" || job.ExtraData["client_id"] != "abc" {
					t.Errorf("client id not carried: %+v", job)
				}
				if _, ok := job.ExtraData["extra_pnginfo"]; !ok {
					t.Errorf("extra_pnginfo lost: %+v", job.ExtraData)
				}
				if got := job.Prompt["1"].Inputs["seed"]; got != json.Number("18446744073709551615") {
					t.Errorf("seed = %v (%T), want every digit kept", got, got)
				}
				if !slices.Equal(job.Outputs, []string{"1"}) {
					t.Errorf("outputs %v, want the validated [1]", job.Outputs)
				}
				// create_time is the server's submit time in ms, not the client's 5.
				ct, err := job.ExtraData["create_time"].(json.Number).Int64()
				if now := time.Now().UnixMilli(); err != nil || ct < now-60_000 || ct > now {
					t.Errorf("create_time %v (%v), want about %d", job.ExtraData["create_time"], err, now)
				}
			},
		},
		{
			name: "null prompt id", status: 200, body: `{"prompt": ` + graphJSON + `, "prompt_id": null}`,
			check: func(t *testing.T, job *executor.Job) {
				if !isCanonicalUUID(job.ID) {
					t.Errorf("generated prompt id %q", job.ID)
				}
			},
		},
		{
			name: "explicit number", status: 200, body: `{"prompt": ` + graphJSON + `, "number": 7.5, "prompt_id": "` + uuid2 + `"}`,
			want: `{"prompt_id": "` + uuid2 + `", "number": 7.5, "node_errors": {}}`,
			check: func(t *testing.T, job *executor.Job) {
				if job.Number != 7.5 {
					t.Errorf("stored number %v", job.Number)
				}
			},
		},
		{
			name: "front", status: 200, body: `{"prompt": ` + graphJSON + `, "front": true, "prompt_id": "` + uuid3 + `"}`,
			setup: func(t *testing.T, ts *testServer) {
				if _, err := ts.queue.Push(context.Background(), &executor.Job{ID: "earlier"}, executor.PushOptions{}); err != nil {
					t.Fatal(err)
				}
			},
			want: `{"prompt_id": "` + uuid3 + `", "number": -1, "node_errors": {}}`,
			check: func(t *testing.T, job *executor.Job) {
				if job.ID != uuid3 || job.Number != -1 {
					t.Errorf("front prompt not first: %+v", job)
				}
			},
		},
		{
			name: "generated id", status: 200, body: `{"prompt": ` + graphJSON + `}`,
			check: func(t *testing.T, job *executor.Job) {
				if len(job.ID) != 36 || strings.Count(job.ID, "-") != 4 || job.ID[14] != '4' {
					t.Errorf("prompt id %q is not a UUID v4", job.ID)
				}
			},
		},
		{
			name: "sensitive extra_data", status: 200,
			body: `{"prompt": ` + graphJSON + `, "prompt_id": "` + uuid4 + `", "extra_data": {"api_key_comfy_org": "k", "auth_token_comfy_org": "a", "x": 1}}`,
			check: func(t *testing.T, job *executor.Job) {
				if _, ok := job.ExtraData["api_key_comfy_org"]; ok || job.ExtraData["x"] != json.Number("1") {
					t.Errorf("queue listing extra_data %v", job.ExtraData)
				}
			},
		},
		{
			name: "partial execution targets", status: 200,
			body: `{"prompt_id": "` + uuid5 + `", "partial_execution_targets": ["2"], "prompt": {"1": {"class_type": "Sink", "inputs": {"width": 1, "seed": 2}},
				"2": {"class_type": "Sink", "inputs": {"width": 3, "seed": 4}}}}`,
			check: func(t *testing.T, job *executor.Job) {
				if !slices.Equal(job.Outputs, []string{"2"}) {
					t.Errorf("outputs %v, want [2]", job.Outputs)
				}
			},
		},
		{
			name: "one output invalid", status: 200,
			body: `{"prompt_id": "` + uuid6 + `", "prompt": {"1": {"class_type": "Sink", "inputs": {"width": 1}},
				"2": {"class_type": "Sink", "inputs": {"width": 3, "seed": 4}}}}`,
			want: `{"prompt_id": "` + uuid6 + `", "number": 0, "node_errors": {"1": {"errors": [{"type": "required_input_missing", "message": "Required input is missing",
				"details": "seed", "extra_info": {"input_name": "seed"}}], "dependent_outputs": ["1"], "class_type": "Sink"}}}`,
			check: func(t *testing.T, job *executor.Job) {
				if !slices.Equal(job.Outputs, []string{"2"}) {
					t.Errorf("outputs %v, want the valid [2]", job.Outputs)
				}
			},
		},
		{
			name: "no prompt", status: 400, body: `{"client_id": "x"}`,
			want: `{"error": {"type": "no_prompt", "message": "No prompt provided", "details": "No prompt provided", "extra_info": {}}, "node_errors": {}}`,
		},
		{
			name: "missing class_type", status: 400, body: `{"prompt": {"5": {"inputs": {}}}}`,
			want: `{"error": {"type": "invalid_prompt", "message": "Cannot execute because a node is missing the class_type property.", "details": "Node ID '#5'", "extra_info": {}}, "node_errors": {}}`,
		},
		{
			name: "duplicate prompt id", status: 400, body: `{"prompt": ` + graphJSON + `, "prompt_id": "` + uuid7 + `"}`,
			setup: func(t *testing.T, ts *testServer) {
				if _, err := ts.queue.Push(context.Background(), &executor.Job{ID: uuid7}, executor.PushOptions{}); err != nil {
					t.Fatal(err)
				}
			},
			want: `{"error": {"type": "invalid_prompt", "message": "Prompt id already queued", "details": "prompt_id \"` + uuid7 + `\" is pending or running", "extra_info": {}}, "node_errors": {}}`,
		},
		{name: "prompt id uppercase", status: 400, body: `{"prompt": ` + graphJSON + `, "prompt_id": "` + strings.ToUpper(uuid1) + `"}`,
			want: `{"error": {"type": "invalid_prompt_id", "message": "prompt_id must be a valid UUID", "details": "prompt_id \"` + strings.ToUpper(uuid1) +
				`\" is not a UUID in canonical form (8-4-4-4-12 lowercase hex digits); leave it out to let the server choose one", "extra_info": {}}, "node_errors": {}}`},
		{name: "prompt id without hyphens", status: 400, body: `{"prompt": ` + graphJSON + `, "prompt_id": "` + strings.ReplaceAll(uuid1, "-", "") + `"}`},
		{name: "prompt id in braces", status: 400, body: `{"prompt": ` + graphJSON + `, "prompt_id": "{` + uuid1 + `}"}`},
		{name: "prompt id urn", status: 400, body: `{"prompt": ` + graphJSON + `, "prompt_id": "urn:uuid:` + uuid1 + `"}`},
		{name: "prompt id a name", status: 400, body: `{"prompt": ` + graphJSON + `, "prompt_id": "p1"}`},
		{name: "prompt id a number", status: 400, body: `{"prompt": ` + graphJSON + `, "prompt_id": 7}`},
		{name: "prompt id an object", status: 400, body: `{"prompt": ` + graphJSON + `, "prompt_id": {"a": 1}}`},
		{name: "prompt not an object", status: 400, body: `{"prompt": [1, 2]}`},
		{name: "node not an object", status: 400, body: `{"prompt": {"1": 3}}`},
		{name: "number not a number", status: 400, body: `{"prompt": {}, "number": [1]}`},
		{name: "number not finite", status: 400, body: `{"prompt": ` + graphJSON + `, "number": "inf"}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t, nil)
			queued := 0
			if tc.setup != nil {
				tc.setup(t, ts)
				queued = len(ts.pending(t))
			}
			rec := ts.do(t, "POST", "/prompt", strings.NewReader(tc.body))
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			if tc.want != "" {
				jsonEqual(t, rec.Body.Bytes(), tc.want)
			}
			pending := ts.pending(t)
			if tc.status != 200 {
				var ans struct {
					Error      map[string]any `json:"error"`
					NodeErrors map[string]any `json:"node_errors"`
				}
				if err := json.Unmarshal(rec.Body.Bytes(), &ans); err != nil || ans.Error["type"] == nil || ans.NodeErrors == nil {
					t.Fatalf("refusal is not ComfyUI's {error: {type...}, node_errors} shape: %s", rec.Body)
				}
				if len(pending) != queued {
					t.Fatalf("refused prompt reached the queue")
				}
				return
			}
			if len(pending) != queued+1 {
				t.Fatalf("queue got %d prompts", len(pending)-queued)
			}
			var ans struct {
				PromptID string `json:"prompt_id"`
			}
			json.Unmarshal(rec.Body.Bytes(), &ans)
			i := slices.IndexFunc(pending, func(j *executor.Job) bool { return j.ID == ans.PromptID })
			if i < 0 {
				t.Fatalf("answered prompt id %q is not queued", ans.PromptID)
			}
			if tc.check != nil {
				tc.check(t, pending[i])
			}
		})
	}
}

func TestPostPromptBadBodies(t *testing.T) {
	ts := newTestServer(t, func(o *Options) { o.MaxPromptSize = 64 })
	for _, tc := range []struct {
		name, body string
		status     int
	}{
		{"malformed", `{"prompt": `, 400},
		{"trailing", `{} {}`, 400},
		{"not an object", `[1]`, 400},
		{"oversized", `{"prompt": {"1": {"class_type": "` + strings.Repeat("x", 100) + `"}}}`, 413},
	} {
		t.Run(tc.name, func(t *testing.T) {
			isJSONError(t, ts.do(t, "POST", "/api/prompt", strings.NewReader(tc.body)), tc.status)
		})
	}
}

func TestPostPromptRejected(t *testing.T) {
	ts := newTestServer(t, nil)
	rec := ts.do(t, "POST", "/prompt", strings.NewReader(`{"prompt": {"3": {"class_type": "Sink", "inputs": {}}}}`))
	if rec.Code != 400 {
		t.Fatalf("status %d", rec.Code)
	}
	jsonEqual(t, rec.Body.Bytes(), `{"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
		"details": "Required input is missing: width\nRequired input is missing: seed", "extra_info": {}},
		"node_errors": {"3": {"errors": [
			{"type": "required_input_missing", "message": "Required input is missing", "details": "width", "extra_info": {"input_name": "width"}},
			{"type": "required_input_missing", "message": "Required input is missing", "details": "seed", "extra_info": {"input_name": "seed"}}],
		"dependent_outputs": ["3"], "class_type": "Sink"}}}`)
	rec = ts.do(t, "POST", "/prompt", strings.NewReader(`{"prompt": {"1": {"class_type": "NoSuchNode", "inputs": {}}}}`))
	jsonEqual(t, rec.Body.Bytes(), `{"error": {"type": "invalid_prompt", "message": "Cannot execute because node NoSuchNode does not exist.",
		"details": "Node ID '#1'", "extra_info": {}}, "node_errors": {}}`)

	full := newTestServer(t, func(o *Options) {
		o.Engine = newTestEngine(t, t.TempDir(), func(q executor.Queue) executor.Queue { return failingPush{q} })
	})
	isJSONError(t, full.do(t, "POST", "/prompt", strings.NewReader(`{"prompt": `+sinkPrompt+`}`)), 500)
}

// failingPush is a queue whose disk is full.
type failingPush struct{ executor.Queue }

func (failingPush) Push(context.Context, *executor.Job, executor.PushOptions) (float64, error) {
	return 0, errors.New("disk full")
}

// pushJob stores a job with an empty prompt directly in the queue.
func pushJob(t *testing.T, q executor.Queue, id string, extra map[string]any) {
	t.Helper()
	if _, err := q.Push(context.Background(), &executor.Job{ID: id, Prompt: graph.Prompt{}, ExtraData: extra, Outputs: []string{"9"}}, executor.PushOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestGetPromptAndQueue(t *testing.T) {
	ts := newTestServer(t, nil)
	pushJob(t, ts.queue, "a", map[string]any{"client_id": "c"})
	pushJob(t, ts.queue, "b", nil)
	if j, err := ts.queue.Lease(context.Background()); err != nil || j.ID != "a" {
		t.Fatalf("lease %v %v", j, err)
	}
	for _, p := range []string{"/prompt", "/api/prompt"} {
		rec := ts.do(t, "GET", p, nil)
		jsonEqual(t, rec.Body.Bytes(), `{"exec_info": {"queue_remaining": 2}}`)
	}
	rec := ts.do(t, "GET", "/queue", nil)
	jsonEqual(t, rec.Body.Bytes(), `{"queue_running": [[0, "a", {}, {"client_id": "c"}, ["9"]]], "queue_pending": [[1, "b", {}, {}, ["9"]]]}`)

	empty := newTestServer(t, nil)
	jsonEqual(t, empty.do(t, "GET", "/api/queue", nil).Body.Bytes(), `{"queue_running": [], "queue_pending": []}`)
}

func TestPostQueue(t *testing.T) {
	ts := newTestServer(t, nil)
	for _, id := range []string{"a", "b", "c"} {
		pushJob(t, ts.queue, id, nil)
	}
	hs := httptest.NewServer(ts)
	defer hs.Close()
	c := dialWS(t, hs.URL, "watcher")
	if m := readWS(t, c); m.typ != "status" {
		t.Fatalf("greeting %s", m.raw)
	}
	if rec := ts.do(t, "POST", "/queue", strings.NewReader(`{"delete": ["a", "b"]}`)); rec.Code != 200 {
		t.Fatalf("status %d", rec.Code)
	}
	if got := ts.pending(t); len(got) != 1 || got[0].ID != "c" {
		t.Fatalf("pending after delete: %v", got)
	}
	// A change of the queue is broadcast, as ComfyUI's queue_updated.
	jsonEqual(t, readWS(t, c).raw, `{"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 1}}}}`)
	ts.do(t, "POST", "/api/queue", strings.NewReader(`{"clear": true}`))
	if got := ts.pending(t); len(got) != 0 {
		t.Fatalf("pending after clear: %v", got)
	}
	jsonEqual(t, readWS(t, c).raw, `{"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}}}`)
	isJSONError(t, ts.do(t, "POST", "/queue", strings.NewReader(`{"delete": 5}`)), 400)
}

func TestInterruptTarget(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{``, ""}, {`not json`, ""}, {`{}`, ""}, {`{"prompt_id": null}`, ""},
		{`{"prompt_id": "p7"}`, "p7"}, {`{"prompt_id": 7}`, "7"},
	} {
		if got := interruptTarget([]byte(tc.body)); got != tc.want {
			t.Errorf("body %q: target %q, want %q", tc.body, got, tc.want)
		}
	}
}

// TestPostInterrupt: a global interrupt (an empty body, or one that does not parse)
// and one naming the running prompt stop it. That an interrupt naming another prompt
// leaves it running is the engine's rule (executor TestInterruptStopsBlockedNode); the
// id the route passes is TestInterruptTarget's.
func TestPostInterrupt(t *testing.T) {
	ts := newTestServer(t, func(o *Options) { o.Engine = newTestEngine(t, t.TempDir(), nil, blockNode{}) })
	sub := ts.engine.Subscribe()
	defer sub.Close()
	runWorker(t, ts.engine)
	for i, body := range []string{``, `not json`, `{"prompt_id": "p2"}`} {
		id := fmt.Sprintf("p%d", i)
		if _, err := ts.engine.Submit(context.Background(), &executor.Job{ID: id, Prompt: graph.Prompt{"1": {ClassType: "Block", Inputs: map[string]any{}}}}, executor.PushOptions{}); err != nil {
			t.Fatal(err)
		}
		waitEvent(t, sub, func(ev executor.Event) bool {
			d, ok := ev.Data.(executor.ExecutingData)
			return ok && d.PromptID == id && d.Node != nil
		})
		if rec := ts.do(t, "POST", "/interrupt", strings.NewReader(body)); rec.Code != http.StatusOK {
			t.Fatalf("body %q: status %d", body, rec.Code)
		}
		waitEvent(t, sub, func(ev executor.Event) bool {
			if ev.Type == executor.EventExecutionSuccess {
				t.Fatalf("%s was not interrupted by %q", id, body)
			}
			d, ok := ev.Data.(executor.ExecutionInterruptedData)
			return ok && d.PromptID == id
		})
	}
}

// waitEvent reads sub until match accepts an event.
func waitEvent(t *testing.T, sub *executor.Subscription, match func(executor.Event) bool) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev := <-sub.C:
			if match(ev) {
				return
			}
		case <-timeout:
			t.Fatal("the expected event never came")
		}
	}
}

func TestHistoryRoutes(t *testing.T) {
	ts := newTestServer(t, nil)
	ctx := context.Background()
	entry := func(id string, outputs map[string]map[string]any) *executor.HistoryEntry {
		return &executor.HistoryEntry{Prompt: executor.Job{ID: id, Prompt: graph.Prompt{}, Outputs: []string{"9"}}, Outputs: outputs,
			Status: executor.Status{StatusStr: executor.StatusSuccess, Completed: true, Messages: []executor.Message{}}, Meta: map[string]executor.NodeMeta{}}
	}
	// Insertion order must survive: "z" first, then "a", then "m".
	for _, e := range []*executor.HistoryEntry{entry("z", nil), entry("a", map[string]map[string]any{"9": {"images": []any{}}}), entry("m", nil)} {
		if err := ts.queue.PutHistory(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	keys := func(target string) []string {
		t.Helper()
		rec := ts.do(t, "GET", target, nil)
		if rec.Code != 200 {
			t.Fatalf("%s: %d %s", target, rec.Code, rec.Body)
		}
		dec := json.NewDecoder(rec.Body)
		var out []string
		dec.Token() // {
		for dec.More() {
			k, _ := dec.Token()
			out = append(out, k.(string))
			var v json.RawMessage
			if err := dec.Decode(&v); err != nil {
				t.Fatal(err)
			}
		}
		return out
	}
	for _, tc := range []struct {
		target string
		want   []string
	}{
		{"/history", []string{"z", "a", "m"}},
		{"/history?max_items=2&offset=0", []string{"z", "a"}},
		{"/history?max_items=1", []string{"m"}},
		{"/api/history?offset=1", []string{"a", "m"}},
	} {
		if got := keys(tc.target); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.target, got, tc.want)
		}
	}
	isJSONError(t, ts.do(t, "GET", "/history?max_items=x", nil), 400)

	jsonEqual(t, ts.do(t, "GET", "/api/history/a", nil).Body.Bytes(),
		`{"a": {"prompt": [0, "a", {}, {}, ["9"]], "outputs": {"9": {"images": []}}, "status": {"status_str": "success", "completed": true, "messages": []}, "meta": {}}}`)
	jsonEqual(t, ts.do(t, "GET", "/history/unknown", nil).Body.Bytes(), `{}`)

	ts.do(t, "POST", "/history", strings.NewReader(`{"delete": ["z"]}`))
	if got := keys("/history"); !slices.Equal(got, []string{"a", "m"}) {
		t.Fatalf("after delete: %v", got)
	}
	ts.do(t, "POST", "/api/history", strings.NewReader(`{"clear": true}`))
	jsonEqual(t, ts.do(t, "GET", "/history", nil).Body.Bytes(), `{}`)
}

func TestNoQueue(t *testing.T) {
	ts := newTestServer(t, func(o *Options) { o.Engine = nil })
	isJSONError(t, ts.do(t, "POST", "/prompt", strings.NewReader(`{"prompt": {"1": {"class_type": "X", "inputs": {}}}}`)), 503)
	jsonEqual(t, ts.do(t, "GET", "/prompt", nil).Body.Bytes(), `{"exec_info": {"queue_remaining": 0}}`)
	jsonEqual(t, ts.do(t, "GET", "/history", nil).Body.Bytes(), `{}`)
	jsonEqual(t, ts.do(t, "GET", "/history/x", nil).Body.Bytes(), `{}`)
	jsonEqual(t, ts.do(t, "GET", "/queue", nil).Body.Bytes(), `{"queue_running": [], "queue_pending": []}`)
	isJSONError(t, ts.do(t, "POST", "/queue", strings.NewReader(`{"clear": true}`)), 503)
	isJSONError(t, ts.do(t, "POST", "/history", strings.NewReader(`{"clear": true}`)), 503)
	if rec := ts.do(t, "POST", "/interrupt", nil); rec.Code != 200 {
		t.Fatalf("interrupt without an engine: %d", rec.Code)
	}

	noQueue, err := executor.New(executor.Options{Registry: nodes.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(Options{Dirs: ts.dirs, Engine: noQueue}); err == nil {
		t.Fatal("a server over an engine without a queue was built")
	}
}

// FuzzPostPrompt sends arbitrary bodies: the answer is always JSON, 200 or 4xx, never a
// panic (the recover middleware would turn one into a 500, which fails here).
func FuzzPostPrompt(f *testing.F) {
	for _, s := range []string{
		`{"prompt": {"1": {"class_type": "A", "inputs": {"x": ["2", 0]}}}, "client_id": "c"}`,
		`{"prompt": {}, "number": "3", "front": 1, "extra_data": null}`,
		`{"prompt": {"1": null}}`, `{"prompt_id": 5, "prompt": {"1": {"class_type": 7}}}`,
		`[]`, `null`, `{`, `{"partial_execution_targets": ["1"], "prompt": {"1": {"class_type": "A"}}}`,
		`{"prompt": ` + sinkPrompt + `, "front": true, "prompt_id": "x"}`, `{"prompt": ` + sinkPrompt + `, "number": "nan"}`,
		`{"prompt": ` + sinkPrompt + `, "number": "-inf"}`, `{"prompt": ` + sinkPrompt + `, "partial_execution_targets": ["9"]}`,
		// Hostile ones (issue 16): an id over the limit, a client_id that is not a
		// string, a cycle, a node linking to itself.
		`{"prompt": ` + sinkPrompt + `, "prompt_id": "` + strings.Repeat("x", 300) + `"}`,
		`{"prompt": ` + sinkPrompt + `, "client_id": {"a": 1}}`,
		`{"prompt": {"1": {"class_type": "Sink", "inputs": {"width": ["2", 0]}}, "2": {"class_type": "Sink", "inputs": {"width": ["1", 0]}}}}`,
		`{"prompt": {"1": {"class_type": "Sink", "inputs": {"width": ["1", 0], "seed": 1}}}}`,
	} {
		f.Add(s)
	}
	ts := newTestServer(f, func(o *Options) { o.MaxPromptSize = 1 << 16 })
	f.Fuzz(func(t *testing.T, body string) {
		rec := ts.do(t, "POST", "/prompt", strings.NewReader(body))
		if rec.Code != 200 && (rec.Code < 400 || rec.Code >= 500) {
			t.Fatalf("status %d for %q: %s", rec.Code, body, rec.Body)
		}
		if !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("answer is not JSON: %s", rec.Body)
		}
		// What one request costs is linear in its size: the answer too.
		if rec.Body.Len() > 32*len(body)+8192 {
			t.Fatalf("a %d-byte body got a %d-byte answer", len(body), rec.Body.Len())
		}
		if err := ts.queue.Clear(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
}

// TestUsageSource: the Comfy-Usage-Source header of POST /prompt, or of the handshake
// of the websocket a prompt came over, becomes extra_data.comfy_usage_source unless
// the body set it.
func TestUsageSource(t *testing.T) {
	ts := newTestServer(t, nil)
	hs := httptest.NewServer(ts)
	defer hs.Close()
	post := func(id, extra string) {
		req, _ := http.NewRequest("POST", hs.URL+"/prompt", strings.NewReader(`{"prompt": `+sinkPrompt+`, "prompt_id": "`+id+`"`+extra+`}`))
		req.Header.Set("Comfy-Usage-Source", "an-app")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("POST /prompt: %d", resp.StatusCode)
		}
	}
	post(uuid1, "")
	post(uuid2, `, "extra_data": {"comfy_usage_source": "the-body"}`)
	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(hs.URL, "http")+"/ws", http.Header{"Comfy-Usage-Source": {"a-socket"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	readWS(t, c)
	wsSend(t, c, `{"type": "prompt", "data": {"prompt": `+sinkPrompt+`, "prompt_id": "`+uuid3+`"}}`)
	readUntil(t, c, []string{"prompt_result"}, "prompt_error")
	got := map[string]any{}
	for _, j := range ts.pending(t) {
		got[j.ID] = j.ExtraData["comfy_usage_source"]
	}
	want := map[string]any{uuid1: "an-app", uuid2: "the-body", uuid3: "a-socket"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("comfy_usage_source %v, want %v", got, want)
	}
}
