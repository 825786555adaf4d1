//go:build integration

package server

import (
	"bytes"
	"encoding/json"
	"image/color"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

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
