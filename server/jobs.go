package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/forgeflow/forgeflow/executor"
)

// The jobs API (ComfyUI's server.py /api/jobs routes and comfy_execution/jobs.py): one
// view of every prompt, pending, running or finished, with a status each, filtered,
// sorted and paged; and a cancel that works whatever the prompt's state. It reads the
// same queue and history as /queue and /history, so it works on a cluster front too.

// Job statuses of the jobs API.
const (
	jobPending    = "pending"
	jobInProgress = "in_progress"
	jobCompleted  = "completed"
	jobFailed     = "failed"
	jobCancelled  = "cancelled"
)

var jobStatuses = []string{jobPending, jobInProgress, jobCompleted, jobFailed, jobCancelled}

// textPreviewMax is how many characters of a text output a job's preview_output keeps.
const textPreviewMax = 1024

// Output kinds and file extensions the jobs API counts as previewable (media the
// ComfyUI front end can show).
var (
	previewableMedia = map[string]bool{"images": true, "video": true, "audio": true, "3d": true, "text": true}
	threeDExts       = []string{".obj", ".fbx", ".gltf", ".glb", ".usdz"}
	textExts         = []string{".txt", ".md", ".json"}
)

func (s *Server) jobRoutes() {
	// ComfyUI declares these with the /api prefix already, so they are also served
	// under /api/api as every route of its table is.
	s.route("GET /api/jobs", s.getJobs)
	s.route("GET /api/jobs/{job_id}", s.getJob)
	s.route("POST /api/jobs/{job_id}/cancel", s.postCancelJob)
	s.route("POST /api/jobs/cancel", s.postCancelJobs)
}

// jobView is one job of the jobs API. Absent values are left out, as ComfyUI's
// prune_dict does; outputs_count and previewable_outputs_count are always there.
type jobView struct {
	ID                      string         `json:"id"`
	Status                  string         `json:"status"`
	Priority                float64        `json:"priority"`
	CreateTime              *int64         `json:"create_time,omitempty"`
	ExecutionStartTime      *int64         `json:"execution_start_time,omitempty"`
	ExecutionEndTime        *int64         `json:"execution_end_time,omitempty"`
	ExecutionError          any            `json:"execution_error,omitempty"`
	OutputsCount            int            `json:"outputs_count"`
	PreviewableOutputsCount int            `json:"previewable_outputs_count"`
	PreviewOutput           map[string]any `json:"preview_output,omitempty"`
	WorkflowID              *string        `json:"workflow_id,omitempty"`

	// Only in GET /api/jobs/{id}: the node outputs and the status of a finished job,
	// and the prompt with its extra_data.
	Outputs         map[string]map[string]any `json:"outputs,omitempty"`
	ExecutionStatus *executor.Status          `json:"execution_status,omitempty"`
	Workflow        *jobWorkflow              `json:"workflow,omitempty"`
}

type jobWorkflow struct {
	Prompt    any            `json:"prompt"`
	ExtraData map[string]any `json:"extra_data"`
}

// jobMeta reads create_time and the workflow id (extra_pnginfo.workflow.id) from a
// job's extra_data.
func jobMeta(extra map[string]any) (createTime *int64, workflowID *string) {
	if n, ok := jsonInt(extra[executor.CreateTimeKey]); ok {
		createTime = &n
	}
	if png, ok := extra["extra_pnginfo"].(map[string]any); ok {
		if wf, ok := png["workflow"].(map[string]any); ok {
			if id, ok := wf["id"].(string); ok {
				workflowID = &id
			}
		}
	}
	return createTime, workflowID
}

// jsonInt reads an integer that is an int64 (a job just submitted) or a json.Number
// or float64 (a job read back from a store).
func jsonInt(v any) (int64, bool) {
	switch x := v.(type) {
	case int64:
		return x, true
	case int:
		return int64(x), true
	case float64:
		return int64(x), x == float64(int64(x))
	case json.Number:
		n, err := x.Int64()
		return n, err == nil
	}
	return 0, false
}

// queuedJob is the view of a pending or running job.
func queuedJob(j *executor.Job, status string, detail bool) *jobView {
	v := &jobView{ID: j.ID, Status: status, Priority: j.Number}
	v.CreateTime, v.WorkflowID = jobMeta(j.ExtraData)
	if detail {
		v.Workflow = &jobWorkflow{Prompt: nonNilPrompt(j), ExtraData: nonNilMap(j.ExtraData)}
	}
	return v
}

func nonNilPrompt(j *executor.Job) any {
	if j.Prompt == nil {
		return map[string]any{}
	}
	return j.Prompt
}

func nonNilMap(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
}

// finishedJob is the view of a history entry: completed on success, cancelled when an
// execution_interrupted message ended it, failed otherwise; the times and the error
// come from its status messages, the counts and the preview from its outputs.
func finishedJob(e *executor.HistoryEntry, detail bool) *jobView {
	v := &jobView{ID: e.Prompt.ID, Priority: e.Prompt.Number, Status: jobCompleted}
	v.CreateTime, v.WorkflowID = jobMeta(e.Prompt.ExtraData)
	interrupted := false
	for _, m := range e.Status.Messages {
		raw, err := json.Marshal(m.Data)
		if err != nil {
			continue
		}
		var d struct {
			Timestamp *int64 `json:"timestamp"`
		}
		if json.Unmarshal(raw, &d) != nil {
			continue // data that is not an object says nothing of the times
		}
		switch m.Event {
		case executor.EventExecutionStart:
			v.ExecutionStartTime = d.Timestamp
		case executor.EventExecutionSuccess, executor.EventExecutionError, executor.EventExecutionInterrupted:
			v.ExecutionEndTime = d.Timestamp
			if m.Event == executor.EventExecutionError {
				v.ExecutionError = json.RawMessage(raw)
			}
			if m.Event == executor.EventExecutionInterrupted {
				interrupted = true
			}
		}
	}
	if e.Status.StatusStr == executor.StatusError {
		v.Status = jobFailed
		if interrupted {
			v.Status = jobCancelled
		}
	}
	outputs := genericOutputs(e.Outputs)
	v.OutputsCount, v.PreviewOutput = outputsSummary(outputs)
	v.PreviewableOutputsCount = countPreviewable(outputs)
	if detail {
		v.Outputs = normalizeOutputs(outputs)
		st := e.Status
		if st.Messages == nil {
			st.Messages = []executor.Message{}
		}
		v.ExecutionStatus = &st
		v.Workflow = &jobWorkflow{Prompt: nonNilPrompt(&e.Prompt), ExtraData: nonNilMap(e.Prompt.ExtraData)}
	}
	return v
}

// nodeOutput is one node's UI output with its id; outputs are walked in node id order
// (numeric ids by value), since a history entry's outputs are a map.
type nodeOutput struct {
	id  string
	out map[string]any
}

// genericOutputs turns a history entry's outputs (typed values when the entry was just
// made, generic ones when it was read back) into plain JSON values in node order.
func genericOutputs(outs map[string]map[string]any) []nodeOutput {
	list := make([]nodeOutput, 0, len(outs))
	for id, o := range outs {
		raw, err := json.Marshal(o)
		if err != nil {
			continue
		}
		var g map[string]any
		if decodeNumbers(raw, &g) != nil {
			continue
		}
		list = append(list, nodeOutput{id: id, out: g})
	}
	sort.Slice(list, func(i, j int) bool { return nodeIDLess(list[i].id, list[j].id) })
	return list
}

// nodeIDLess orders node ids numerically when both are numbers, else as strings.
func nodeIDLess(a, b string) bool {
	x, errA := strconv.ParseInt(a, 10, 64)
	y, errB := strconv.ParseInt(b, 10, 64)
	if errA == nil && errB == nil {
		return x < y
	}
	if (errA == nil) != (errB == nil) {
		return errA == nil
	}
	return a < b
}

// mediaLists returns a node output's lists of items by media type, in key order;
// "animated" is a flag, not items.
func mediaLists(out map[string]any) []struct {
	media string
	items []any
} {
	keys := make([]string, 0, len(out))
	for k := range out {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var lists []struct {
		media string
		items []any
	}
	for _, k := range keys {
		items, ok := out[k].([]any)
		if k == "animated" || !ok {
			continue
		}
		lists = append(lists, struct {
			media string
			items []any
		}{k, items})
	}
	return lists
}

func hasExt(name string, exts []string) bool {
	name = strings.ToLower(name)
	return slices.ContainsFunc(exts, func(e string) bool { return strings.HasSuffix(name, e) })
}

// normalizeItem returns an output item as a file object: objects as they are, a string
// naming a 3D file as {filename, type, subfolder, mediaType: 3d}; nil for anything
// else.
func normalizeItem(item any) map[string]any {
	switch x := item.(type) {
	case map[string]any:
		return x
	case string:
		if hasExt(x, threeDExts) {
			return map[string]any{"filename": x, "type": "output", "subfolder": "", "mediaType": "3d"}
		}
	}
	return nil
}

func normalizeOutputs(outs []nodeOutput) map[string]map[string]any {
	norm := make(map[string]map[string]any, len(outs))
	for _, o := range outs {
		n := make(map[string]any, len(o.out))
		for k, v := range o.out {
			items, ok := v.([]any)
			if k == "animated" || !ok {
				n[k] = v
				continue
			}
			kept := make([]any, 0, len(items))
			for _, it := range items {
				if it == nil {
					continue
				}
				if f := normalizeItem(it); f != nil {
					kept = append(kept, f)
				} else {
					kept = append(kept, it)
				}
			}
			n[k] = kept
		}
		norm[o.id] = n
	}
	return norm
}

func itemString(item map[string]any, key string) string {
	s, _ := item[key].(string)
	return s
}

func isPreviewable(media string, item map[string]any) bool {
	if previewableMedia[media] {
		return true
	}
	if f := itemString(item, "format"); strings.HasPrefix(f, "video/") || strings.HasPrefix(f, "audio/") {
		return true
	}
	name := itemString(item, "filename")
	return hasExt(name, threeDExts) || hasExt(name, textExts)
}

func isTextPreview(media string, item map[string]any) bool {
	return media == "text" || hasExt(itemString(item, "filename"), textExts)
}

// outputsSummary counts a job's output items (text strings are preview material, not
// outputs) and picks its preview: a saved visual output first, then any other visual
// one (a temp preview), then a saved text file, then raw text.
func outputsSummary(outs []nodeOutput) (int, map[string]any) {
	count := 0
	var saved, visual, textFile, text map[string]any
	for _, o := range outs {
		for _, l := range mediaLists(o.out) {
			for _, it := range l.items {
				item := normalizeItem(it)
				if item == nil {
					if l.media == "text" && text == nil && it != nil {
						text = textPreview(it, o.id)
					}
					continue
				}
				count++
				if saved != nil || !isPreviewable(l.media, item) {
					continue
				}
				e := make(map[string]any, len(item)+2)
				for k, v := range item {
					e[k] = v
				}
				e["nodeId"] = o.id
				if _, ok := item["mediaType"]; !ok {
					e["mediaType"] = l.media
				}
				switch {
				case isTextPreview(l.media, item):
					if textFile == nil {
						textFile = e
					}
				case itemString(item, "type") == "output":
					saved = e
				case visual == nil:
					visual = e
				}
			}
		}
	}
	for _, p := range []map[string]any{saved, visual, textFile, text} {
		if p != nil {
			return count, p
		}
	}
	return count, nil
}

// textPreview is the preview of a raw text output: its first textPreviewMax characters.
func textPreview(it any, node string) map[string]any {
	s, ok := it.(string)
	if !ok {
		if l, isList := it.([]any); isList && len(l) > 0 {
			s, _ = l[0].(string)
		} else {
			s = fmt.Sprint(it)
		}
	}
	p := map[string]any{"nodeId": node, "mediaType": "text"}
	if r := []rune(s); len(r) > textPreviewMax {
		p["content"], p["truncated"] = string(r[:textPreviewMax]), true
	} else {
		p["content"] = s
	}
	return p
}

// countPreviewable counts the items the front end can show (not every output item is:
// a saved latent is an output but no media).
func countPreviewable(outs []nodeOutput) int {
	n := 0
	for _, o := range outs {
		for _, l := range mediaLists(o.out) {
			for _, it := range l.items {
				if item := normalizeItem(it); item != nil && isPreviewable(l.media, item) {
					n++
				}
			}
		}
	}
	return n
}

// jobsQuery is GET /api/jobs's query after its checks.
type jobsQuery struct {
	statuses   map[string]bool
	workflowID string
	byDuration bool
	desc       bool
	limit      *int
	offset     int
}

// parseJobsQuery reads the query; a refusal is ComfyUI's message for the user.
func parseJobsQuery(r *http.Request) (jq jobsQuery, refusal string) {
	q := r.URL.Query()
	jq = jobsQuery{statuses: map[string]bool{}, workflowID: q.Get("workflow_id"), desc: true}
	if v := q.Get("status"); v != "" {
		var bad []string
		for _, st := range strings.Split(v, ",") {
			st = strings.ToLower(strings.TrimSpace(st))
			if st == "" {
				continue
			}
			if !slices.Contains(jobStatuses, st) {
				bad = append(bad, st)
			}
			jq.statuses[st] = true
		}
		if len(bad) > 0 {
			return jq, fmt.Sprintf("Invalid status value(s): %s. Valid values: %s", strings.Join(bad, ", "), strings.Join(jobStatuses, ", "))
		}
	}
	if len(jq.statuses) == 0 {
		for _, st := range jobStatuses {
			jq.statuses[st] = true
		}
	}
	switch strings.ToLower(q.Get("sort_by")) {
	case "", "created_at":
	case "execution_duration":
		jq.byDuration = true
	default:
		return jq, "sort_by must be 'created_at' or 'execution_duration'"
	}
	switch strings.ToLower(q.Get("sort_order")) {
	case "", "desc":
	case "asc":
		jq.desc = false
	default:
		return jq, "sort_order must be 'asc' or 'desc'"
	}
	if q.Has("limit") {
		n, err := strconv.Atoi(strings.TrimSpace(q.Get("limit")))
		if err != nil {
			return jq, "limit must be an integer"
		}
		if n <= 0 {
			return jq, "limit must be a positive integer"
		}
		jq.limit = &n
	}
	if q.Has("offset") {
		n, err := strconv.Atoi(strings.TrimSpace(q.Get("offset")))
		if err != nil {
			return jq, "offset must be an integer"
		}
		jq.offset = max(n, 0)
	}
	return jq, ""
}

// jobsPage is GET /api/jobs's answer.
type jobsPage struct {
	Jobs       []*jobView `json:"jobs"`
	Pagination struct {
		Offset  int  `json:"offset"`
		Limit   *int `json:"limit"`
		Total   int  `json:"total"`
		HasMore bool `json:"has_more"`
	} `json:"pagination"`
}

// getJobs is GET /api/jobs?status=&workflow_id=&sort_by=&sort_order=&limit=&offset=:
// the running jobs, then the pending ones in queue order, then the history in its
// order, filtered, stably sorted by create time (or execution duration; a job without
// one counts as 0) and paged.
func (s *Server) getJobs(w http.ResponseWriter, r *http.Request) {
	jq, refusal := parseJobsQuery(r)
	if refusal != "" {
		s.writeError(w, http.StatusBadRequest, refusal)
		return
	}
	jobs := []*jobView{}
	if s.queue != nil {
		running, pending, err := s.queue.List(r.Context())
		if err != nil {
			s.writeError(w, http.StatusInternalServerError, "cannot list queue", err.Error())
			return
		}
		if jq.statuses[jobInProgress] {
			for _, j := range running {
				jobs = append(jobs, queuedJob(j, jobInProgress, false))
			}
		}
		if jq.statuses[jobPending] {
			for _, j := range pending {
				jobs = append(jobs, queuedJob(j, jobPending, false))
			}
		}
		if jq.statuses[jobCompleted] || jq.statuses[jobFailed] || jq.statuses[jobCancelled] {
			entries, err := s.queue.ListHistory(r.Context(), -1, -1)
			if err != nil {
				s.writeError(w, http.StatusInternalServerError, "cannot read history", err.Error())
				return
			}
			for _, e := range entries {
				if v := finishedJob(e, false); jq.statuses[v.Status] {
					jobs = append(jobs, v)
				}
			}
		}
	}
	if jq.workflowID != "" {
		jobs = slices.DeleteFunc(jobs, func(v *jobView) bool { return v.WorkflowID == nil || *v.WorkflowID != jq.workflowID })
	}
	key := func(v *jobView) int64 {
		if jq.byDuration {
			if v.ExecutionStartTime != nil && v.ExecutionEndTime != nil && *v.ExecutionStartTime != 0 && *v.ExecutionEndTime != 0 {
				return *v.ExecutionEndTime - *v.ExecutionStartTime
			}
			return 0
		}
		if v.CreateTime != nil {
			return *v.CreateTime
		}
		return 0
	}
	sort.SliceStable(jobs, func(i, j int) bool {
		if jq.desc {
			return key(jobs[i]) > key(jobs[j])
		}
		return key(jobs[i]) < key(jobs[j])
	})
	var page jobsPage
	page.Pagination.Total = len(jobs)
	page.Pagination.Offset = jq.offset
	page.Pagination.Limit = jq.limit
	jobs = jobs[min(jq.offset, len(jobs)):]
	if jq.limit != nil && *jq.limit < len(jobs) {
		jobs = jobs[:*jq.limit]
	}
	page.Jobs = jobs
	page.Pagination.HasMore = jq.offset+len(jobs) < page.Pagination.Total
	s.writeJSON(w, http.StatusOK, page)
}

// getJob is GET /api/jobs/{job_id}: the job with its prompt, and for a finished one
// its outputs and status; 404 when no queue or history holds it.
func (s *Server) getJob(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("job_id")
	if s.queue != nil {
		e, err := s.queue.GetHistory(r.Context(), id)
		switch {
		case err == nil:
			s.writeJSON(w, http.StatusOK, finishedJob(e, true))
			return
		case !errors.Is(err, executor.ErrNotFound):
			s.writeError(w, http.StatusInternalServerError, "cannot read history", err.Error())
			return
		}
		running, pending, err := s.queue.List(r.Context())
		if err != nil {
			s.writeError(w, http.StatusInternalServerError, "cannot list queue", err.Error())
			return
		}
		for _, l := range []struct {
			jobs   []*executor.Job
			status string
		}{{running, jobInProgress}, {pending, jobPending}} {
			if i := slices.IndexFunc(l.jobs, func(j *executor.Job) bool { return j.ID == id }); i >= 0 {
				s.writeJSON(w, http.StatusOK, queuedJob(l.jobs[i], l.status, true))
				return
			}
		}
	}
	s.writeError(w, http.StatusNotFound, "Job not found")
}

// cancelJobs cancels each job of ids whatever its state: a pending job leaves the
// queue (as POST /queue {"delete"}), a running one is interrupted (as POST /interrupt
// with its id, so it can never stop another prompt), a finished or unknown one is left
// alone. It reports whether it cancelled any. A job that starts between the listing
// and the delete is interrupted instead.
func (s *Server) cancelJobs(ctx context.Context, ids []string) (bool, error) {
	if s.queue == nil || len(ids) == 0 {
		return false, nil
	}
	running, pending, err := s.queue.List(ctx)
	if err != nil {
		return false, err
	}
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	cancelled := false
	var del []string
	for _, j := range pending {
		if want[j.ID] {
			del = append(del, j.ID)
		}
	}
	for _, j := range running {
		if want[j.ID] && s.interruptRunning(ctx, j.ID) {
			cancelled = true
		}
	}
	if len(del) == 0 {
		return cancelled, nil
	}
	n, err := s.queue.Delete(ctx, del...)
	if err != nil {
		return cancelled, err
	}
	if n > 0 {
		cancelled = true
		s.queueUpdated(ctx)
	}
	if n == len(del) {
		return cancelled, nil
	}
	// Some left the pending list meanwhile: interrupt those that run now.
	for _, id := range del {
		if s.interruptRunning(ctx, id) {
			cancelled = true
		}
	}
	return cancelled, nil
}

// interruptRunning interrupts prompt id if it runs and reports whether it did. The
// engine's interrupt is atomic; a cluster front's (Options.Interrupt) is sent to every
// worker and names the prompt, so it is sent when the queue lists id as running.
func (s *Server) interruptRunning(ctx context.Context, id string) bool {
	if s.opts.Interrupt == nil {
		if s.engine == nil {
			return false
		}
		ok := s.engine.Interrupt(id)
		if ok {
			s.log.Info("cancel running prompt", "prompt_id", id)
		}
		return ok
	}
	running, _, err := s.queue.List(ctx)
	if err != nil || !slices.ContainsFunc(running, func(j *executor.Job) bool { return j.ID == id }) {
		return false
	}
	s.log.Info("cancel running prompt", "prompt_id", id)
	s.opts.Interrupt(id)
	return true
}

// postCancelJob is POST /api/jobs/{job_id}/cancel: {"cancelled": bool}; a finished or
// unknown id is not an error.
func (s *Server) postCancelJob(w http.ResponseWriter, r *http.Request) {
	ok, err := s.cancelJobs(r.Context(), []string{r.PathValue("job_id")})
	if err != nil {
		s.writeError(w, http.StatusInternalServerError, "cannot cancel job", err.Error())
		return
	}
	s.writeJSON(w, http.StatusOK, map[string]bool{"cancelled": ok})
}

// postCancelJobs is POST /api/jobs/cancel {"job_ids": [uuid, ...]}: every id must be a
// canonical UUID (400 naming the others, before anything is cancelled); then each is
// cancelled as by POST /api/jobs/{id}/cancel.
func (s *Server) postCancelJobs(w http.ResponseWriter, r *http.Request) {
	body, ok := s.readBody(w, r, s.opts.MaxPromptSize)
	if !ok {
		return
	}
	var req any
	if err := decodeNumbers(body, &req); err != nil {
		s.writeError(w, http.StatusBadRequest, "Request body must be valid JSON")
		return
	}
	obj, _ := req.(map[string]any)
	list, ok := obj["job_ids"].([]any)
	if !ok {
		s.writeError(w, http.StatusBadRequest, "job_ids must be a list")
		return
	}
	ids := make([]string, 0, len(list))
	invalid := []string{}
	for _, v := range list {
		id, isString := v.(string)
		if !isString {
			raw, _ := json.Marshal(v) // a decoded JSON value always encodes
			invalid = append(invalid, truncate(string(raw), 64))
			continue
		}
		if !isCanonicalUUID(id) {
			invalid = append(invalid, truncate(id, 64))
			continue
		}
		ids = append(ids, id)
	}
	if len(invalid) > 0 {
		s.writeJSON(w, http.StatusBadRequest, map[string]any{"error": "job_ids contains invalid id(s)", "invalid_ids": invalid})
		return
	}
	cancelled, err := s.cancelJobs(r.Context(), ids)
	if err != nil {
		s.writeError(w, http.StatusInternalServerError, "cannot cancel jobs", err.Error())
		return
	}
	s.writeJSON(w, http.StatusOK, map[string]bool{"cancelled": cancelled})
}
