package server

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
)

func TestPostPrompt(t *testing.T) {
	const graphJSON = `{"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "seed": 18446744073709551615}}}`
	tests := []struct {
		name       string
		body       string
		status     int
		want       string // expected JSON answer; "" to skip
		wantNumber float64
		check      func(t *testing.T, req PromptRequest)
	}{
		{
			name: "accepted", status: 200, body: `{"prompt": ` + graphJSON + `, "client_id": "abc", "prompt_id": "p1", "extra_data": {"extra_pnginfo": {"workflow": {}}}}`,
			want: `{"prompt_id": "p1", "number": 0, "node_errors": {}}`,
			check: func(t *testing.T, req PromptRequest) {
				if req.ClientID != "abc" || req.ExtraData["client_id"] != "abc" {
					t.Errorf("client id not carried: %+v", req)
				}
				if _, ok := req.ExtraData["extra_pnginfo"]; !ok {
					t.Errorf("extra_pnginfo lost: %+v", req.ExtraData)
				}
				if got := req.Prompt["1"].Inputs["seed"]; got != json.Number("18446744073709551615") {
					t.Errorf("seed = %v (%T), want every digit kept", got, got)
				}
			},
		},
		{
			name: "explicit number", status: 200, body: `{"prompt": ` + graphJSON + `, "number": 7.5, "prompt_id": "p2"}`,
			want: `{"prompt_id": "p2", "number": 7.5, "node_errors": {}}`,
		},
		{
			name: "front", status: 200, body: `{"prompt": ` + graphJSON + `, "front": true, "prompt_id": "p3"}`,
			check: func(t *testing.T, req PromptRequest) {
				if !req.Front || req.Number != nil {
					t.Errorf("front not passed: %+v", req)
				}
			},
		},
		{
			name: "generated id", status: 200, body: `{"prompt": ` + graphJSON + `}`,
			check: func(t *testing.T, req PromptRequest) {
				if len(req.PromptID) != 36 || strings.Count(req.PromptID, "-") != 4 || req.PromptID[14] != '4' {
					t.Errorf("prompt id %q is not a UUID v4", req.PromptID)
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
		{name: "prompt not an object", status: 400, body: `{"prompt": [1, 2]}`},
		{name: "node not an object", status: 400, body: `{"prompt": {"1": 3}}`},
		{name: "number not a number", status: 400, body: `{"prompt": {}, "number": [1]}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t, nil)
			rec := ts.do(t, "POST", "/prompt", strings.NewReader(tc.body))
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			if tc.want != "" {
				jsonEqual(t, rec.Body.Bytes(), tc.want)
			}
			if tc.status != 200 {
				var ans struct {
					Error      map[string]any `json:"error"`
					NodeErrors map[string]any `json:"node_errors"`
				}
				if err := json.Unmarshal(rec.Body.Bytes(), &ans); err != nil || ans.Error["type"] == nil || ans.NodeErrors == nil {
					t.Fatalf("refusal is not ComfyUI's {error: {type...}, node_errors} shape: %s", rec.Body)
				}
				if len(ts.queue.submitted) != 0 {
					t.Fatalf("refused prompt reached the queue")
				}
				return
			}
			if len(ts.queue.submitted) != 1 {
				t.Fatalf("queue got %d prompts", len(ts.queue.submitted))
			}
			if tc.check != nil {
				tc.check(t, ts.queue.submitted[0])
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
	ts.queue.reject = &Rejection{
		Err:        json.RawMessage(`{"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation", "details": "", "extra_info": {}}`),
		NodeErrors: json.RawMessage(`{"3": {"errors": [{"type": "required_input_missing"}], "dependent_outputs": ["3"], "class_type": "SaveImage"}}`),
	}
	rec := ts.do(t, "POST", "/prompt", strings.NewReader(`{"prompt": {"3": {"class_type": "SaveImage", "inputs": {}}}}`))
	if rec.Code != 400 {
		t.Fatalf("status %d", rec.Code)
	}
	jsonEqual(t, rec.Body.Bytes(), `{"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation", "details": "", "extra_info": {}},
		"node_errors": {"3": {"errors": [{"type": "required_input_missing"}], "dependent_outputs": ["3"], "class_type": "SaveImage"}}}`)

	ts.queue.reject = nil
	ts.queue.submitErr = errors.New("disk full")
	isJSONError(t, ts.do(t, "POST", "/prompt", strings.NewReader(`{"prompt": {"3": {"class_type": "SaveImage", "inputs": {}}}}`)), 500)
}

func TestGetPromptAndQueue(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.queue.running = []json.RawMessage{json.RawMessage(`[0, "a", {}, {"client_id": "c"}, ["9"]]`)}
	ts.queue.pending = []json.RawMessage{json.RawMessage(`[1, "b", {}, {}, ["9"]]`)}
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
	if rec := ts.do(t, "POST", "/queue", strings.NewReader(`{"delete": ["a", "b"]}`)); rec.Code != 200 {
		t.Fatalf("status %d", rec.Code)
	}
	if ts.queue.cleared || strings.Join(ts.queue.deleted, ",") != "a,b" {
		t.Fatalf("delete: cleared=%v deleted=%v", ts.queue.cleared, ts.queue.deleted)
	}
	ts.do(t, "POST", "/api/queue", strings.NewReader(`{"clear": true}`))
	if !ts.queue.cleared {
		t.Fatal("clear not passed")
	}
	isJSONError(t, ts.do(t, "POST", "/queue", strings.NewReader(`{"delete": 5}`)), 400)
}

func TestPostInterrupt(t *testing.T) {
	ts := newTestServer(t, nil)
	for _, body := range []string{``, `not json`, `{"prompt_id": "p7"}`} {
		if rec := ts.do(t, "POST", "/interrupt", strings.NewReader(body)); rec.Code != http.StatusOK {
			t.Fatalf("body %q: status %d", body, rec.Code)
		}
	}
	if got := strings.Join(ts.queue.interrupted, "|"); got != "||p7" {
		t.Fatalf("interrupts %q, want two global and one targeted", got)
	}
}

func TestHistoryRoutes(t *testing.T) {
	ts := newTestServer(t, nil)
	// Insertion order must survive: "z" first, then "a".
	ts.queue.history = []HistoryEntry{
		{PromptID: "z", Data: json.RawMessage(`{"prompt": [0, "z", {}, {}, []], "outputs": {}, "status": {"status_str": "success", "completed": true, "messages": []}, "meta": {}}`)},
		{PromptID: "a", Data: json.RawMessage(`{"prompt": [1, "a", {}, {}, []], "outputs": {"9": {"images": []}}, "status": null, "meta": {}}`)},
	}
	rec := ts.do(t, "GET", "/history?max_items=2&offset=0", nil)
	if got := rec.Body.String(); strings.Index(got, `"z"`) > strings.Index(got, `"a"`) {
		t.Fatalf("history order lost: %s", got)
	}
	if ts.queue.histArgs != [2]int{2, 0} {
		t.Fatalf("paging args %v", ts.queue.histArgs)
	}
	ts.do(t, "GET", "/history", nil)
	if ts.queue.histArgs != [2]int{-1, -1} {
		t.Fatalf("default paging args %v", ts.queue.histArgs)
	}
	isJSONError(t, ts.do(t, "GET", "/history?max_items=x", nil), 400)

	jsonEqual(t, ts.do(t, "GET", "/api/history/a", nil).Body.Bytes(),
		`{"a": {"prompt": [1, "a", {}, {}, []], "outputs": {"9": {"images": []}}, "status": null, "meta": {}}}`)
	jsonEqual(t, ts.do(t, "GET", "/history/unknown", nil).Body.Bytes(), `{}`)

	ts.do(t, "POST", "/history", strings.NewReader(`{"delete": ["z"]}`))
	ts.do(t, "POST", "/api/history", strings.NewReader(`{"clear": true}`))
	if !ts.queue.histCleared || len(ts.queue.histDeleted) != 1 || ts.queue.histDeleted[0] != "z" {
		t.Fatalf("history clear/delete: %v %v", ts.queue.histCleared, ts.queue.histDeleted)
	}
}

func TestNoQueue(t *testing.T) {
	ts := newTestServer(t, func(o *Options) { o.Queue = nil })
	isJSONError(t, ts.do(t, "POST", "/prompt", strings.NewReader(`{"prompt": {"1": {"class_type": "X", "inputs": {}}}}`)), 503)
	jsonEqual(t, ts.do(t, "GET", "/prompt", nil).Body.Bytes(), `{"exec_info": {"queue_remaining": 0}}`)
	jsonEqual(t, ts.do(t, "GET", "/history", nil).Body.Bytes(), `{}`)
}

// FuzzPostPrompt sends arbitrary bodies: the answer is always JSON, 200 or 4xx, never a
// panic (the recover middleware would turn one into a 500, which fails here).
func FuzzPostPrompt(f *testing.F) {
	for _, s := range []string{
		`{"prompt": {"1": {"class_type": "A", "inputs": {"x": ["2", 0]}}}, "client_id": "c"}`,
		`{"prompt": {}, "number": "3", "front": 1, "extra_data": null}`,
		`{"prompt": {"1": null}}`, `{"prompt_id": 5, "prompt": {"1": {"class_type": 7}}}`,
		`[]`, `null`, `{`, `{"partial_execution_targets": ["1"], "prompt": {"1": {"class_type": "A"}}}`,
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
		ts.queue.mu.Lock()
		ts.queue.submitted = nil
		ts.queue.mu.Unlock()
	})
}
