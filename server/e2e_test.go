//go:build integration

package server

import (
	"bytes"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/gorilla/websocket"

	"github.com/forgeflow/forgeflow/internal/testenv"
)

// TestEndToEndWebsocket is what an unmodified ComfyUI API client does: connect, queue a
// graph with its client id, follow the events, read the history and fetch the image.
func TestEndToEndWebsocket(t *testing.T) {
	testenv.EndToEnd(t)
	ts, _ := engineServer(t)
	hs := httptest.NewServer(ts)
	defer hs.Close()
	c := dialWS(t, hs.URL, "client-1")
	if m := readWS(t, c); m.typ != "status" || m.data["sid"] != "client-1" {
		t.Fatalf("greeting %s", m.raw)
	}
	prompt := `{"client_id": "client-1", "prompt": {
		"1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 8, "batch_size": 1, "color": 16711680}},
		"2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
		"3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "e2e/test"}}}}`
	resp, err := http.Post(hs.URL+"/api/prompt", "application/json", strings.NewReader(prompt))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST /prompt: %d %s", resp.StatusCode, body)
	}
	var ans struct {
		PromptID   string         `json:"prompt_id"`
		Number     float64        `json:"number"`
		NodeErrors map[string]any `json:"node_errors"`
	}
	if err := json.Unmarshal(body, &ans); err != nil || ans.PromptID == "" || ans.NodeErrors == nil {
		t.Fatalf("answer %s", body)
	}

	var seen []string
	var output map[string]any
	for len(seen) < 50 {
		m := readWS(t, c)
		if m.binary {
			continue
		}
		seen = append(seen, m.typ)
		if m.typ == "executed" {
			output, _ = m.data["output"].(map[string]any)
			if m.data["node"] != "3" || m.data["prompt_id"] != ans.PromptID {
				t.Fatalf("executed %s", m.raw)
			}
		}
		if m.typ == "execution_error" {
			t.Fatalf("execution error: %s", m.raw)
		}
		// ComfyUI's clients take "executing" with node null as the end of a prompt:
		// it comes after the history entry is written.
		if m.typ == "executing" && m.data["node"] == nil {
			break
		}
	}
	order := strings.Join(seen, " ")
	for _, want := range []string{"status", "execution_start", "executing", "executed", "execution_success", "progress_state"} {
		if !strings.Contains(order, want) {
			t.Fatalf("events %q lack %s", order, want)
		}
	}
	if strings.Index(order, "execution_start") > strings.Index(order, "executed") {
		t.Fatalf("events out of order: %s", order)
	}
	images, _ := output["images"].([]any)
	if len(images) != 1 {
		t.Fatalf("executed output %v", output)
	}
	img := images[0].(map[string]any)
	q := url.Values{"filename": {img["filename"].(string)}, "subfolder": {img["subfolder"].(string)}, "type": {img["type"].(string)}}
	resp, err = http.Get(hs.URL + "/view?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/view %d: %s", resp.StatusCode, data)
	}
	m, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if b := m.Bounds(); b.Dx() != 16 || b.Dy() != 8 {
		t.Fatalf("image %v, want 16x8", b)
	}
	r, g, bl, _ := m.At(3, 3).RGBA()
	if r>>8 != 0 || g>>8 != 255 || bl>>8 != 255 {
		t.Fatalf("pixel %d,%d,%d: want inverted red (0,255,255)", r>>8, g>>8, bl>>8)
	}

	// The history has the prompt with its outputs and status.
	resp, err = http.Get(hs.URL + "/history/" + ans.PromptID)
	if err != nil {
		t.Fatal(err)
	}
	var hist map[string]struct {
		Prompt  []any          `json:"prompt"`
		Outputs map[string]any `json:"outputs"`
		Status  map[string]any `json:"status"`
	}
	json.NewDecoder(resp.Body).Decode(&hist)
	resp.Body.Close()
	h, ok := hist[ans.PromptID]
	if !ok || len(h.Prompt) < 5 || h.Prompt[1] != ans.PromptID || h.Outputs["3"] == nil || h.Status["status_str"] != "success" {
		t.Fatalf("history %+v", hist)
	}
}

func TestEngineRejects(t *testing.T) {
	testenv.EndToEnd(t)
	ts, _ := engineServer(t)
	for _, tc := range []struct {
		name, body, typ string
	}{
		{"unknown class", `{"prompt": {"1": {"class_type": "NoSuchNode", "inputs": {}}}}`, "invalid_prompt"},
		{"no outputs", `{"prompt": {"1": {"class_type": "EmptyImage", "inputs": {}}}}`, "prompt_no_outputs"},
		{"bad input", `{"prompt": {"1": {"class_type": "EmptyImage", "inputs": {"width": 0, "height": 8, "batch_size": 1, "color": 0}},
			"2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}}`, "prompt_outputs_failed_validation"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := ts.do(t, "POST", "/prompt", strings.NewReader(tc.body))
			if rec.Code != 400 {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			var ans struct {
				Error struct {
					Type string `json:"type"`
				} `json:"error"`
				NodeErrors map[string]any `json:"node_errors"`
			}
			json.Unmarshal(rec.Body.Bytes(), &ans)
			if ans.Error.Type != tc.typ || ans.NodeErrors == nil {
				t.Fatalf("answer %s, want error type %s", rec.Body, tc.typ)
			}
			if tc.typ == "prompt_outputs_failed_validation" && !strings.Contains(rec.Body.String(), `"value_smaller_than_min"`) {
				t.Fatalf("node_errors lack the width error: %s", rec.Body)
			}
		})
	}
}

// TestEndToEndUploadAndLoad uploads an image the way ComfyUI's clients do, queues a
// LoadImage graph that reads it, and checks the saved result.
func TestEndToEndUploadAndLoad(t *testing.T) {
	testenv.EndToEnd(t)
	ts, _ := engineServer(t)
	hs := httptest.NewServer(ts)
	defer hs.Close()
	src := pngBytes(t, 6, 4, func(x, y int) color.NRGBA { return color.NRGBA{uint8(40 * x), uint8(60 * y), 7, 255} })
	body, ct := multipartBody(t, "in.png", src, map[string]string{"subfolder": "up"})
	resp, err := http.Post(hs.URL+"/upload/image", ct, body)
	if err != nil {
		t.Fatal(err)
	}
	var up uploadAnswer
	json.NewDecoder(resp.Body).Decode(&up)
	resp.Body.Close()
	if resp.StatusCode != 200 || up.Name != "in.png" || up.Subfolder != "up" || up.Type != "input" {
		t.Fatalf("upload: %d %+v", resp.StatusCode, up)
	}
	c := dialWS(t, hs.URL, "client-2")
	readWS(t, c)
	prompt := `{"client_id": "client-2", "prompt": {
		"1": {"class_type": "LoadImage", "inputs": {"image": "up/in.png"}},
		"2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "loaded"}}}}`
	resp, err = http.Post(hs.URL+"/prompt", "application/json", strings.NewReader(prompt))
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST /prompt: %d %s", resp.StatusCode, data)
	}
	var file map[string]any
	for file == nil {
		m := readWS(t, c)
		switch m.typ {
		case "execution_error":
			t.Fatalf("execution error: %s", m.raw)
		case "executed":
			out, _ := m.data["output"].(map[string]any)
			imgs, _ := out["images"].([]any)
			if len(imgs) != 1 {
				t.Fatalf("executed %s", m.raw)
			}
			file = imgs[0].(map[string]any)
		}
	}
	q := url.Values{"filename": {file["filename"].(string)}, "subfolder": {file["subfolder"].(string)}, "type": {file["type"].(string)}}
	resp, err = http.Get(hs.URL + "/api/view?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	got, err := png.Decode(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	for y := 0; y < 4; y++ {
		for x := 0; x < 6; x++ {
			r, g, b, _ := got.At(x, y).RGBA()
			if r>>8 != uint32(40*x) || g>>8 != uint32(60*y) || b>>8 != 7 {
				t.Fatalf("pixel (%d,%d) = %d,%d,%d: the uploaded image did not round-trip", x, y, r>>8, g>>8, b>>8)
			}
		}
	}
}

// TestEndToEndInterrupt: POST /interrupt stops the running prompt, the client gets
// execution_interrupted, and the next prompt in the queue still runs.
func TestEndToEndInterrupt(t *testing.T) {
	testenv.EndToEnd(t)
	ts, _ := engineServer(t, blockNode{})
	hs := httptest.NewServer(ts)
	defer hs.Close()
	c := dialWS(t, hs.URL, "c3")
	readWS(t, c)
	post := func(body string) string {
		resp, err := http.Post(hs.URL+"/prompt", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var ans struct {
			PromptID string `json:"prompt_id"`
		}
		json.NewDecoder(resp.Body).Decode(&ans)
		if resp.StatusCode != 200 {
			t.Fatalf("POST /prompt: %d", resp.StatusCode)
		}
		return ans.PromptID
	}
	blocked := post(`{"client_id": "c3", "prompt": {"1": {"class_type": "Block", "inputs": {}}}}`)
	next := post(`{"client_id": "c3", "prompt": {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
		"2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "after"}}}}`)
	interrupted, nextDone := false, false
	for !nextDone {
		m := readWS(t, c)
		if m.binary {
			continue
		}
		switch {
		case m.typ == "executing" && m.data["node"] == "1" && m.data["prompt_id"] == blocked:
			resp, err := http.Post(hs.URL+"/interrupt", "application/json", strings.NewReader(`{"prompt_id": "`+blocked+`"}`))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
		case m.typ == "execution_interrupted":
			if m.data["prompt_id"] != blocked || m.data["node_id"] != "1" {
				t.Fatalf("interrupted %s", m.raw)
			}
			interrupted = true
		case m.typ == "execution_success" && m.data["prompt_id"] == next:
			nextDone = true
		case m.typ == "execution_success" && m.data["prompt_id"] == blocked:
			t.Fatal("the blocked prompt succeeded")
		}
	}
	if !interrupted {
		t.Fatal("no execution_interrupted before the next prompt ran")
	}
}

// TestEndToEndCurrentClient is what a client written against today's ComfyUI does, on
// the real engine, durable store and built-in nodes: the feature-flags handshake, a
// prompt with its own prompt_id that runs only one of two outputs (the other one would
// fail validation), the jobs API to find the result, /view to fetch it; then the same
// over the websocket, as the editor sends it.
func TestEndToEndCurrentClient(t *testing.T) {
	testenv.EndToEnd(t)
	ts, _ := engineServer(t)
	hs := httptest.NewServer(ts)
	defer hs.Close()
	c := dialWS(t, hs.URL, "today")
	readWS(t, c)
	wsSend(t, c, map[string]any{"type": "feature_flags", "data": map[string]any{"supports_preview_metadata": true}})
	flags := readUntil(t, c, []string{"feature_flags"})
	if flags.data["supports_preview_metadata"] != true || flags.data["max_upload_size"] == nil || flags.data["forgeflow_ws_prompt"] != true {
		t.Fatalf("server feature flags %s", flags.raw)
	}

	const graphJSON = `{
		"1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 8, "batch_size": 1, "color": 255}},
		"2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
		"3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "today/partial"}},
		"4": {"class_type": "EmptyImage", "inputs": {"width": 0, "height": 8, "batch_size": 1, "color": 0}},
		"5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "today/never"}}}`
	const id1 = "0b6b3c1e-8f1a-4d2b-9c3e-5a7d9e1f2a01"
	resp, err := http.Post(hs.URL+"/api/prompt", "application/json", strings.NewReader(`{"client_id": "today", "prompt_id": "`+id1+`",
		"partial_execution_targets": ["3"], "extra_data": {"extra_pnginfo": {"workflow": {"id": "wf-today"}}}, "prompt": `+graphJSON+`}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST /api/prompt: %d %s", resp.StatusCode, body)
	}
	jsonEqual(t, body, `{"prompt_id": "`+id1+`", "number": 0, "node_errors": {}}`)
	_, states := followPrompt(t, c, id1, "")
	if states == 0 {
		t.Error("no progress_state for the prompt")
	}

	job := getJSON(t, hs.URL+"/api/jobs/"+id1)
	if job["status"] != "completed" || job["workflow_id"] != "wf-today" || job["outputs_count"] != float64(1) {
		t.Fatalf("job %v", job)
	}
	created, started, ended := job["create_time"].(float64), job["execution_start_time"].(float64), job["execution_end_time"].(float64)
	if created <= 0 || started < created || ended < started {
		t.Errorf("times: created %v started %v ended %v", created, started, ended)
	}
	outputs := job["outputs"].(map[string]any)
	if _, ok := outputs["5"]; ok || outputs["3"] == nil {
		t.Fatalf("outputs %v: want node 3 only", outputs)
	}
	preview := job["preview_output"].(map[string]any)
	if preview["nodeId"] != "3" || preview["mediaType"] != "images" || preview["type"] != "output" || preview["subfolder"] != "today" {
		t.Fatalf("preview_output %v", preview)
	}
	q := url.Values{"filename": {preview["filename"].(string)}, "subfolder": {"today"}, "type": {"output"}}
	img := getPNG(t, hs.URL+"/api/view?"+q.Encode())
	if r, g, b, _ := img.At(2, 2).RGBA(); r>>8 != 255 || g>>8 != 255 || b>>8 != 0 {
		t.Errorf("pixel %d,%d,%d: want inverted blue (255,255,0)", r>>8, g>>8, b>>8)
	}
	list := getJSON(t, hs.URL+"/api/jobs?status=completed&workflow_id=wf-today")
	if jobs := list["jobs"].([]any); len(jobs) != 1 || jobs[0].(map[string]any)["id"] != id1 {
		t.Fatalf("jobs list %v", list)
	}

	// Over the websocket, as the editor sends it: the same answers as POST /prompt. With
	// every output, the broken one is reported in node_errors and the others run (as
	// ComfyUI does); with only the broken one as target, the prompt is refused.
	wsSend(t, c, `{"type": "prompt", "id": "broken", "data": {"prompt": `+graphJSON+`, "partial_execution_targets": ["5"]}}`)
	refusal := readUntil(t, c, []string{"prompt_result", "prompt_error"})
	if refusal.typ != "prompt_error" || refusal.data["id"] != "broken" || refusal.data["status"] != float64(400) ||
		refusal.data["error"].(map[string]any)["type"] != "prompt_outputs_failed_validation" || refusal.data["node_errors"].(map[string]any)["4"] == nil {
		t.Fatalf("refusal %s", refusal.raw)
	}
	const id2, id3 = "0b6b3c1e-8f1a-4d2b-9c3e-5a7d9e1f2a02", "0b6b3c1e-8f1a-4d2b-9c3e-5a7d9e1f2a03"
	wsSend(t, c, `{"type": "prompt", "id": "all", "data": {"prompt": `+graphJSON+`, "prompt_id": "`+id3+`"}}`)
	all, _ := followPrompt(t, c, id3, "all")
	if errs, _ := all.data["node_errors"].(map[string]any); all.typ != "prompt_result" || errs["4"] == nil || len(errs) != 1 {
		t.Fatalf("answer %s", all.raw)
	}
	if job := getJSON(t, hs.URL+"/api/jobs/"+id3); job["status"] != "completed" || job["outputs_count"] != float64(1) {
		t.Fatalf("job with a broken output %v", job)
	}
	wsSend(t, c, `{"type": "prompt", "id": "one", "data": {"prompt": `+graphJSON+`, "prompt_id": "`+id2+`", "partial_execution_targets": ["3"]}}`)
	ans, _ := followPrompt(t, c, id2, "one")
	jsonEqual(t, ans.raw, `{"type": "prompt_result", "data": {"id": "one", "prompt_id": "`+id2+`", "number": 2, "node_errors": {}}}`)
	if job := getJSON(t, hs.URL+"/api/jobs/"+id2); job["status"] != "completed" {
		t.Fatalf("websocket job %v", job)
	}
	// A finished job cannot be cancelled; /history has the create_time of both.
	resp, err = http.Post(hs.URL+"/api/jobs/"+id2+"/cancel", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	jsonEqual(t, body, `{"cancelled": false}`)
	hist := getJSON(t, hs.URL+"/history")
	for _, id := range []string{id1, id2} {
		entry, _ := hist[id].(map[string]any)
		if entry == nil {
			t.Fatalf("history lacks %s", id)
		}
		prompt := entry["prompt"].([]any)
		if extra := prompt[3].(map[string]any); extra["create_time"] == nil || extra["client_id"] != "today" {
			t.Errorf("history %s extra_data %v", id, extra)
		}
	}
}

// followPrompt reads c up to the end of prompt id ("executing" with node null) and,
// when reqID is set, the answer to the websocket request reqID, which may come before
// or after the prompt's events (as a POST /prompt answer may). It fails the test on
// an execution_error or a refusal, and counts the prompt's progress_state messages.
func followPrompt(t *testing.T, c *websocket.Conn, id, reqID string) (answer wsMsg, states int) {
	t.Helper()
	for ended := false; !ended || (reqID != "" && answer.typ == ""); {
		m := readWS(t, c)
		switch {
		case m.binary:
		case (m.typ == "prompt_result" || m.typ == "prompt_error") && m.data["id"] == reqID:
			if m.typ == "prompt_error" {
				t.Fatalf("refused: %s", m.raw)
			}
			answer = m
		case m.data["prompt_id"] != id:
		case m.typ == "execution_error":
			t.Fatalf("execution error: %s", m.raw)
		case m.typ == "progress_state":
			states++
		case m.typ == "executing" && m.data["node"] == nil:
			ended = true
		}
	}
	return answer, states
}

func getJSON(t *testing.T, u string) map[string]any {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %v", u, resp.StatusCode, err)
	}
	return v
}

func getPNG(t *testing.T, u string) image.Image {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d", u, resp.StatusCode)
	}
	img, err := png.Decode(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	return img
}
