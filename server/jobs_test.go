package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/forgeflow/forgeflow/executor"
	"github.com/forgeflow/forgeflow/graph"
)

// Job ids of the jobs tests.
const (
	jobRunning   = "00000000-0000-4000-8000-000000000001"
	jobPendingA  = "00000000-0000-4000-8000-000000000002"
	jobPendingB  = "00000000-0000-4000-8000-000000000003"
	jobDone      = "00000000-0000-4000-8000-000000000004"
	jobBroken    = "00000000-0000-4000-8000-000000000005"
	jobStopped   = "00000000-0000-4000-8000-000000000006"
	jobTextOnly  = "00000000-0000-4000-8000-000000000007"
	jobNoCreated = "00000000-0000-4000-8000-000000000008"
)

func msg(event string, ts int64, extra ...any) executor.Message {
	d := map[string]any{"prompt_id": "x", "timestamp": ts}
	for i := 0; i+1 < len(extra); i += 2 {
		d[extra[i].(string)] = extra[i+1]
	}
	return executor.Message{Event: event, Data: d}
}

func historyEntry(id string, number float64, created int64, workflow string, ok bool, outputs map[string]map[string]any, msgs ...executor.Message) *executor.HistoryEntry {
	extra := map[string]any{}
	if created != 0 {
		extra["create_time"] = created
	}
	if workflow != "" {
		extra["extra_pnginfo"] = map[string]any{"workflow": map[string]any{"id": workflow, "nodes": []any{}}}
	}
	st := executor.Status{StatusStr: executor.StatusError, Messages: msgs}
	if ok {
		st.StatusStr, st.Completed = executor.StatusSuccess, true
	}
	if outputs == nil {
		outputs = map[string]map[string]any{}
	}
	return &executor.HistoryEntry{Prompt: executor.Job{ID: id, Number: number, Prompt: graph.Prompt{}, ExtraData: extra, Outputs: []string{"9"}},
		Outputs: outputs, Status: st, Meta: map[string]executor.NodeMeta{}}
}

// jobsFixture fills a queue with one running job, two pending and five finished ones
// (completed with images, failed, interrupted, text only, one without create_time).
func jobsFixture(t *testing.T, q executor.Queue) {
	t.Helper()
	ctx := context.Background()
	push := func(id string, created int64, workflow string) {
		extra := map[string]any{"create_time": created, "client_id": "c"}
		if workflow != "" {
			extra["extra_pnginfo"] = map[string]any{"workflow": map[string]any{"id": workflow}}
		}
		if _, err := q.Push(ctx, &executor.Job{ID: id, Prompt: graph.Prompt{"9": {ClassType: "Sink", Inputs: map[string]any{}}}, ExtraData: extra, Outputs: []string{"9"}}, executor.PushOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	push(jobRunning, 5000, "wf-a")
	if j, err := q.Lease(ctx); err != nil || j.ID != jobRunning {
		t.Fatalf("lease: %v %v", j, err)
	}
	push(jobPendingA, 6000, "wf-b")
	push(jobPendingB, 7000, "")
	img := func(name, typ string) map[string]any {
		return map[string]any{"filename": name, "subfolder": "", "type": typ}
	}
	entries := []*executor.HistoryEntry{
		historyEntry(jobDone, 1, 1000, "wf-a", true, map[string]map[string]any{
			"3":  {"images": []any{img("tmp.png", "temp")}},
			"10": {"images": []any{img("out_1.png", "output"), img("out_2.png", "output")}, "animated": []any{false}},
			"12": {"latents": []any{img("x.latent", "output")}},
		}, msg("execution_start", 1100), msg("execution_cached", 1150, "nodes", []any{}), msg("execution_success", 4100)),
		historyEntry(jobBroken, 2, 2000, "", false, nil,
			msg("execution_start", 2100), msg("execution_error", 2600, "node_id", "4", "exception_message", "boom")),
		historyEntry(jobStopped, 3, 3000, "wf-a", false, map[string]map[string]any{"5": {"images": []any{img("p.png", "temp")}}},
			msg("execution_start", 3100), msg("execution_interrupted", 3200, "node_id", "5")),
		historyEntry(jobTextOnly, 4, 4000, "", true, map[string]map[string]any{"7": {"text": []any{strings.Repeat("é", 1500)}}},
			msg("execution_start", 4100), msg("execution_success", 4150)),
		historyEntry(jobNoCreated, 5, 0, "", true, nil),
	}
	for _, e := range entries {
		if err := q.PutHistory(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
}

type jobsAnswer struct {
	Jobs []struct {
		ID                      string          `json:"id"`
		Status                  string          `json:"status"`
		Priority                float64         `json:"priority"`
		CreateTime              *int64          `json:"create_time"`
		ExecutionStartTime      *int64          `json:"execution_start_time"`
		ExecutionEndTime        *int64          `json:"execution_end_time"`
		ExecutionError          map[string]any  `json:"execution_error"`
		OutputsCount            int             `json:"outputs_count"`
		PreviewableOutputsCount int             `json:"previewable_outputs_count"`
		PreviewOutput           map[string]any  `json:"preview_output"`
		WorkflowID              *string         `json:"workflow_id"`
		Outputs                 json.RawMessage `json:"outputs"`
		Workflow                json.RawMessage `json:"workflow"`
	} `json:"jobs"`
	Pagination struct {
		Offset  int  `json:"offset"`
		Limit   *int `json:"limit"`
		Total   int  `json:"total"`
		HasMore bool `json:"has_more"`
	} `json:"pagination"`
}

func (a jobsAnswer) ids() []string {
	var out []string
	for _, j := range a.Jobs {
		out = append(out, j.ID)
	}
	return out
}

func getJobs(t *testing.T, ts *testServer, query string) jobsAnswer {
	t.Helper()
	rec := ts.do(t, "GET", "/api/jobs"+query, nil)
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /api/jobs%s: %d %s", query, rec.Code, rec.Body)
	}
	var a jobsAnswer
	if err := json.Unmarshal(rec.Body.Bytes(), &a); err != nil {
		t.Fatal(err)
	}
	return a
}

func TestJobsList(t *testing.T) {
	ts := newTestServer(t, nil)
	jobsFixture(t, ts.queue)

	all := getJobs(t, ts, "")
	// Newest first by create_time; the job without one counts as 0.
	want := []string{jobPendingB, jobPendingA, jobRunning, jobTextOnly, jobStopped, jobBroken, jobDone, jobNoCreated}
	if !slices.Equal(all.ids(), want) {
		t.Fatalf("jobs %v, want %v", all.ids(), want)
	}
	if p := all.Pagination; p.Total != 8 || p.Offset != 0 || p.Limit != nil || p.HasMore {
		t.Errorf("pagination %+v", p)
	}
	byID := map[string]int{}
	for i, j := range all.Jobs {
		byID[j.ID] = i
		if j.Outputs != nil || j.Workflow != nil {
			t.Errorf("%s: the list carries outputs or the workflow", j.ID)
		}
	}
	status := map[string]string{jobRunning: "in_progress", jobPendingA: "pending", jobPendingB: "pending", jobDone: "completed",
		jobBroken: "failed", jobStopped: "cancelled", jobTextOnly: "completed", jobNoCreated: "completed"}
	for id, st := range status {
		if got := all.Jobs[byID[id]].Status; got != st {
			t.Errorf("%s: status %q, want %q", id, got, st)
		}
	}
	done := all.Jobs[byID[jobDone]]
	if done.OutputsCount != 4 || done.PreviewableOutputsCount != 3 || *done.ExecutionStartTime != 1100 || *done.ExecutionEndTime != 4100 ||
		*done.CreateTime != 1000 || *done.WorkflowID != "wf-a" || done.Priority != 1 {
		t.Errorf("completed job: %+v", done)
	}
	// The saved image wins over the temp preview of a node before it.
	if p := done.PreviewOutput; p["filename"] != "out_1.png" || p["nodeId"] != "10" || p["mediaType"] != "images" {
		t.Errorf("preview_output %v", p)
	}
	broken := all.Jobs[byID[jobBroken]]
	if broken.ExecutionError["exception_message"] != "boom" || *broken.ExecutionEndTime != 2600 || broken.PreviewOutput != nil || broken.WorkflowID != nil {
		t.Errorf("failed job: %+v", broken)
	}
	if p := all.Jobs[byID[jobStopped]].PreviewOutput; p["filename"] != "p.png" {
		t.Errorf("cancelled job's preview (a temp image when nothing was saved): %v", p)
	}
	text := all.Jobs[byID[jobTextOnly]]
	if c, _ := text.PreviewOutput["content"].(string); text.OutputsCount != 0 || len([]rune(c)) != 1024 || text.PreviewOutput["truncated"] != true {
		t.Errorf("text-only job: count %d, preview %d runes, truncated %v", text.OutputsCount, len([]rune(c)), text.PreviewOutput["truncated"])
	}
	pending := all.Jobs[byID[jobPendingB]]
	if pending.OutputsCount != 0 || pending.ExecutionStartTime != nil || pending.WorkflowID != nil || *pending.CreateTime != 7000 {
		t.Errorf("pending job: %+v", pending)
	}
	// The pruned fields are absent, not null.
	rec := ts.do(t, "GET", "/api/jobs?status=pending&limit=1", nil)
	jsonEqual(t, rec.Body.Bytes(), `{"jobs": [{"id": "`+jobPendingB+`", "status": "pending", "priority": 2, "create_time": 7000,
		"outputs_count": 0, "previewable_outputs_count": 0}], "pagination": {"offset": 0, "limit": 1, "total": 2, "has_more": true}}`)

	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"?status=pending,in_progress", []string{jobPendingB, jobPendingA, jobRunning}},
		{"?status=%20FAILED%20,cancelled,", []string{jobStopped, jobBroken}},
		{"?sort_order=asc&status=completed", []string{jobNoCreated, jobDone, jobTextOnly}},
		{"?workflow_id=wf-a", []string{jobRunning, jobStopped, jobDone}},
		// Duration: done 3000 ms, broken 500, stopped 100, text 50; others 0 (stable).
		{"?sort_by=execution_duration&status=completed,failed,cancelled", []string{jobDone, jobBroken, jobStopped, jobTextOnly, jobNoCreated}},
		{"?sort_by=EXECUTION_DURATION&sort_order=ASC&status=completed,failed,cancelled", []string{jobNoCreated, jobTextOnly, jobStopped, jobBroken, jobDone}},
		{"?offset=6", []string{jobDone, jobNoCreated}},
		{"?offset=-3&limit=2", []string{jobPendingB, jobPendingA}},
		{"?offset=100", nil},
	} {
		if got := getJobs(t, ts, tc.query); !slices.Equal(got.ids(), tc.want) {
			t.Errorf("%s: %v, want %v", tc.query, got.ids(), tc.want)
		}
	}
	page := getJobs(t, ts, "?offset=-3&limit=2")
	if p := page.Pagination; p.Offset != 0 || *p.Limit != 2 || p.Total != 8 || !p.HasMore {
		t.Errorf("pagination of a negative offset: %+v", p)
	}

	for _, tc := range []struct{ query, want string }{
		{"?status=done,pending,nope", `{"error": "Invalid status value(s): done, nope. Valid values: pending, in_progress, completed, failed, cancelled"}`},
		{"?sort_by=name", `{"error": "sort_by must be 'created_at' or 'execution_duration'"}`},
		{"?sort_order=up", `{"error": "sort_order must be 'asc' or 'desc'"}`},
		{"?limit=0", `{"error": "limit must be a positive integer"}`},
		{"?limit=", `{"error": "limit must be an integer"}`},
		{"?limit=2.5", `{"error": "limit must be an integer"}`},
		{"?offset=x", `{"error": "offset must be an integer"}`},
	} {
		rec := ts.do(t, "GET", "/api/jobs"+tc.query, nil)
		if rec.Code != http.StatusBadRequest {
			t.Errorf("%s: status %d", tc.query, rec.Code)
		}
		jsonEqual(t, rec.Body.Bytes(), tc.want)
	}
	// ComfyUI's table gets the /api prefix added once more.
	if rec := ts.do(t, "GET", "/api/api/jobs", nil); rec.Code != http.StatusOK {
		t.Errorf("/api/api/jobs: %d", rec.Code)
	}
}

func TestJobDetail(t *testing.T) {
	ts := newTestServer(t, nil)
	jobsFixture(t, ts.queue)
	rec := ts.do(t, "GET", "/api/jobs/"+jobDone, nil)
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	var d struct {
		Status  string                    `json:"status"`
		Outputs map[string]map[string]any `json:"outputs"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &d); err != nil {
		t.Fatal(err)
	}
	var raw map[string]json.RawMessage
	json.Unmarshal(rec.Body.Bytes(), &raw)
	jsonEqual(t, raw["execution_status"], `{"status_str": "success", "completed": true, "messages": [
		["execution_start", {"prompt_id": "x", "timestamp": 1100}], ["execution_cached", {"prompt_id": "x", "timestamp": 1150, "nodes": []}],
		["execution_success", {"prompt_id": "x", "timestamp": 4100}]]}`)
	jsonEqual(t, raw["workflow"], `{"prompt": {}, "extra_data": {"create_time": 1000, "extra_pnginfo": {"workflow": {"id": "wf-a", "nodes": []}}}}`)
	if d.Status != "completed" || len(d.Outputs) != 3 || len(d.Outputs["10"]["images"].([]any)) != 2 {
		t.Errorf("detail of a finished job: %s", rec.Body)
	}

	rec = ts.do(t, "GET", "/api/jobs/"+jobPendingA, nil)
	jsonEqual(t, rec.Body.Bytes(), `{"id": "`+jobPendingA+`", "status": "pending", "priority": 1, "create_time": 6000, "workflow_id": "wf-b",
		"outputs_count": 0, "previewable_outputs_count": 0, "workflow": {"prompt": {"9": {"class_type": "Sink", "inputs": {}}},
		"extra_data": {"create_time": 6000, "client_id": "c", "extra_pnginfo": {"workflow": {"id": "wf-b"}}}}}`)
	if rec := ts.do(t, "GET", "/api/jobs/"+jobRunning, nil); !strings.Contains(rec.Body.String(), `"status":"in_progress"`) {
		t.Errorf("running job: %s", rec.Body)
	}
	rec = ts.do(t, "GET", "/api/jobs/nope", nil)
	if rec.Code != http.StatusNotFound {
		t.Errorf("unknown job: %d", rec.Code)
	}
	jsonEqual(t, rec.Body.Bytes(), `{"error": "Job not found"}`)
}

// TestCancelJobs: a running prompt is interrupted and ends cancelled, a pending one
// leaves the queue and never runs, finished and unknown ids are no-ops; the batch
// refuses malformed ids before cancelling anything.
func TestCancelJobs(t *testing.T) {
	ts := newTestServer(t, func(o *Options) { o.Engine = newTestEngine(t, t.TempDir(), nil, blockNode{}) })
	sub := ts.engine.Subscribe()
	defer sub.Close()
	runWorker(t, ts.engine)
	block := graph.Prompt{"1": {ClassType: "Block", Inputs: map[string]any{}}}
	for _, id := range []string{jobRunning, jobPendingA, jobPendingB} {
		if _, err := ts.engine.Submit(context.Background(), &executor.Job{ID: id, Prompt: block}, executor.PushOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitEvent(t, sub, func(ev executor.Event) bool {
		d, ok := ev.Data.(executor.ExecutingData)
		return ok && d.PromptID == jobRunning && d.Node != nil
	})
	cancel := func(path, body, want string) {
		t.Helper()
		rec := ts.do(t, "POST", path, strings.NewReader(body))
		if rec.Code != http.StatusOK {
			t.Fatalf("POST %s %s: %d %s", path, body, rec.Code, rec.Body)
		}
		jsonEqual(t, rec.Body.Bytes(), want)
	}
	cancel("/api/jobs/"+jobPendingB+"/cancel", "", `{"cancelled": true}`)
	if p := ts.pending(t); len(p) != 1 || p[0].ID != jobPendingA {
		t.Fatalf("pending after cancelling B: %v", p)
	}
	cancel("/api/jobs/"+jobRunning+"/cancel", "", `{"cancelled": true}`)
	waitEvent(t, sub, func(ev executor.Event) bool {
		d, ok := ev.Data.(executor.ExecutionInterruptedData)
		return ok && d.PromptID == jobRunning
	})
	// A is next; once it runs, cancel it through the batch with ids that are no-ops.
	waitEvent(t, sub, func(ev executor.Event) bool {
		d, ok := ev.Data.(executor.ExecutingData)
		return ok && d.PromptID == jobPendingA && d.Node != nil
	})
	cancel("/api/jobs/cancel", `{"job_ids": ["`+jobRunning+`", "`+jobDone+`", "`+jobPendingA+`"]}`, `{"cancelled": true}`)
	waitEvent(t, sub, func(ev executor.Event) bool {
		d, ok := ev.Data.(executor.ExecutionInterruptedData)
		return ok && d.PromptID == jobPendingA
	})
	waitEvent(t, sub, func(ev executor.Event) bool { // A's history entry is written
		d, ok := ev.Data.(executor.ExecutingData)
		return ok && d.PromptID == jobPendingA && d.Node == nil
	})
	cancel("/api/jobs/"+jobRunning+"/cancel", "", `{"cancelled": false}`)
	cancel("/api/jobs/nope/cancel", "", `{"cancelled": false}`)
	cancel("/api/jobs/cancel", `{"job_ids": ["`+jobDone+`"]}`, `{"cancelled": false}`)
	cancel("/api/jobs/cancel", `{"job_ids": []}`, `{"cancelled": false}`)

	for _, id := range []string{jobRunning, jobPendingA} {
		rec := ts.do(t, "GET", "/api/jobs/"+id, nil)
		if !strings.Contains(rec.Body.String(), `"status":"cancelled"`) {
			t.Errorf("%s after its cancel: %s", id, rec.Body)
		}
	}
	if rec := ts.do(t, "GET", "/api/jobs/"+jobPendingB, nil); rec.Code != http.StatusNotFound {
		t.Errorf("a cancelled pending job has no history: %d %s", rec.Code, rec.Body)
	}

	for _, tc := range []struct{ body, want string }{
		{`{"job_ids": `, `{"error": "Request body must be valid JSON"}`},
		{`[1]`, `{"error": "job_ids must be a list"}`},
		{`{"job_ids": "` + jobDone + `"}`, `{"error": "job_ids must be a list"}`},
		{`{}`, `{"error": "job_ids must be a list"}`},
		{`{"job_ids": ["` + jobDone + `", "x", 7, {"a": 1}, "` + strings.ToUpper(uuid1) + `"]}`,
			`{"error": "job_ids contains invalid id(s)", "invalid_ids": ["x", "7", "{\"a\":1}", "` + strings.ToUpper(uuid1) + `"]}`},
	} {
		rec := ts.do(t, "POST", "/api/jobs/cancel", strings.NewReader(tc.body))
		if rec.Code != http.StatusBadRequest {
			t.Errorf("%s: status %d", tc.body, rec.Code)
		}
		jsonEqual(t, rec.Body.Bytes(), tc.want)
	}
}

// TestCancelJobsClusterFront: with Options.Interrupt (a cluster front, whose engine
// runs nothing itself), a job the queue lists as running is interrupted through it by
// id; a pending job is deleted without it.
func TestCancelJobsClusterFront(t *testing.T) {
	var mu sync.Mutex
	var sent []string
	ts := newTestServer(t, func(o *Options) {
		o.Interrupt = func(id string) { mu.Lock(); sent = append(sent, id); mu.Unlock() }
	})
	jobsFixture(t, ts.queue)
	rec := ts.do(t, "POST", "/api/jobs/cancel", strings.NewReader(fmt.Sprintf(`{"job_ids": [%q, %q, %q]}`, jobRunning, jobPendingA, jobDone)))
	jsonEqual(t, rec.Body.Bytes(), `{"cancelled": true}`)
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(sent, []string{jobRunning}) {
		t.Errorf("interrupts sent %v, want only the running job", sent)
	}
	if p := ts.pending(t); len(p) != 1 || p[0].ID != jobPendingB {
		t.Errorf("pending after the cancel: %v", p)
	}
}

// TestCreateTime: POST /prompt stamps extra_data.create_time (ms), which /queue and,
// once the prompt ran, /history carry in the queue item, and the jobs API reports.
func TestCreateTime(t *testing.T) {
	ts := newTestServer(t, nil)
	before := time.Now().UnixMilli()
	rec := ts.do(t, "POST", "/prompt", strings.NewReader(`{"prompt": `+sinkPrompt+`, "prompt_id": "`+uuid1+`"}`))
	if rec.Code != http.StatusOK {
		t.Fatalf("POST /prompt: %d %s", rec.Code, rec.Body)
	}
	after := time.Now().UnixMilli()
	check := func(where string, item []json.RawMessage) {
		t.Helper()
		var extra struct {
			CreateTime *int64 `json:"create_time"`
		}
		if len(item) != 5 || json.Unmarshal(item[3], &extra) != nil || extra.CreateTime == nil || *extra.CreateTime < before || *extra.CreateTime > after {
			t.Fatalf("%s: queue item without a create_time in [%d, %d]: %s", where, before, after, item)
		}
	}
	var queue struct {
		Pending [][]json.RawMessage `json:"queue_pending"`
	}
	json.Unmarshal(ts.do(t, "GET", "/queue", nil).Body.Bytes(), &queue)
	if len(queue.Pending) != 1 {
		t.Fatalf("/queue: %v", queue)
	}
	check("/queue", queue.Pending[0])

	sub := ts.engine.Subscribe()
	defer sub.Close()
	runWorker(t, ts.engine)
	waitEvent(t, sub, func(ev executor.Event) bool {
		d, ok := ev.Data.(executor.ExecutingData)
		return ok && d.PromptID == uuid1 && d.Node == nil
	})
	var hist map[string]struct {
		Prompt []json.RawMessage `json:"prompt"`
	}
	json.Unmarshal(ts.do(t, "GET", "/history/"+uuid1, nil).Body.Bytes(), &hist)
	check("/history", hist[uuid1].Prompt)
	if j := getJobs(t, ts, "").Jobs; len(j) != 1 || j[0].Status != "completed" || *j[0].CreateTime < before {
		t.Errorf("jobs after the run: %+v", j)
	}
}
