// Command apidiff sends the same requests to a ComfyUI server and a forgeflow server
// and reports where their answers differ: status codes, the keys of JSON answers,
// POST /prompt refusals (error type, nodes and error types of node_errors), and the
// websocket messages of one prompt (types and data keys, progress_state left out
// since forgeflow sends it at most every 100 ms). codex/server.md ("Checked against
// ComfyUI") has a run against the refpeer's ComfyUI 0.3.64.
//
//	go run ./server/internal/apidiff -a 127.0.0.1:8188 -b 127.0.0.1:18377
//
// Both servers should start with an empty queue and history; the prompts queued are
// small (EmptyImage, ImageInvert, SaveImage and PreviewImage of 8×8 images).
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/gorilla/websocket"
)

// request is one request sent to both servers.
type request struct {
	method, path, body, contentType string
}

func get(path string) request { return request{"GET", path, "", ""} }

func post(path, body string) request { return request{"POST", path, body, "application/json"} }

// prompt wraps nodes (a JSON object) as a POST /prompt body.
func prompt(nodes string) request { return post("/prompt", `{"prompt": `+nodes+`}`) }

const (
	empty  = `"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}`
	saveOf = `"2": {"class_type": "SaveImage", "inputs": {"images": %s, "filename_prefix": "apidiff"}}`
)

var requests = []request{
	get("/prompt"), get("/queue"), get("/history?max_items=1"), get("/history?max_items=x"), get("/history/nope"),
	get("/object_info/Nope"), get("/embeddings"), get("/models"), get("/models/checkpoints"), get("/models/nope"),
	get("/extensions"), get("/features"), get("/settings"), get("/settings/Comfy.Nope"), get("/users"),
	get("/userdata?dir=nope"), get("/userdata/nope.json"), get("/v2/userdata"), get("/v2/userdata?path=nope"),
	get("/view"), get("/view?filename=nope.png"), get("/view?filename=../x.png"), get("/view?filename=x.png&type=bogus"),
	get("/view?filename=x.png&subfolder=../.."), get("/view_metadata/checkpoints"),
	get("/view_metadata/checkpoints?filename=x.safetensors"), get("/experiment/models"),
	get("/experiment/models/checkpoints"), get("/experiment/models/nope"),
	get("/experiment/models/preview/checkpoints/0/x.safetensors"), get("/experiment/models/preview/checkpoints/x/x"),
	get("/internal/folder_paths"), get("/internal/files/output"), get("/internal/files/bogus"), get("/internal/logs/raw"),
	get("/i18n"), get("/workflow_templates"), get("/api/prompt"), get("/api/nope"), get("/nope"),
	post("/prompt", "{}"), post("/prompt", "not json"), post("/prompt", `{"prompt": "x"}`), prompt(`{}`),
	prompt(`{"1": {"class_type": "NoSuch", "inputs": {}}}`),
	prompt(`{"1": {"inputs": {}}}`),
	prompt(`{"1": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x"}}}`),
	prompt(`{` + fmt.Sprintf(saveOf, `["9", 0]`) + `}`),
	prompt(`{` + empty + `}`),
	prompt(`{` + empty + `, ` + fmt.Sprintf(saveOf, `["1", 5]`) + `}`),
	prompt(`{"1": {"class_type": "EmptyImage", "inputs": {"width": "abc", "height": 8, "batch_size": 1, "color": 0}}, ` + fmt.Sprintf(saveOf, `["1", 0]`) + `}`),
	prompt(`{"1": {"class_type": "EmptyImage", "inputs": {"width": 99999, "height": 8, "batch_size": 1, "color": 0}}, ` + fmt.Sprintf(saveOf, `["1", 0]`) + `}`),
	prompt(`{"1": {"class_type": "EmptyLatentImage", "inputs": {"width": 8, "height": 8, "batch_size": 1}}, ` + fmt.Sprintf(saveOf, `["1", 0]`) + `}`),
	prompt(`{"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "nope.safetensors"}}, "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}`),
	prompt(`{"1": {"class_type": "ImageInvert", "inputs": {"image": ["3", 0]}}, "3": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}}, ` + fmt.Sprintf(saveOf, `["1", 0]`) + `}`),
	post("/queue", "{}"), post("/queue", "not json"), post("/queue", `{"delete": ["x"]}`), post("/queue", `{"clear": false}`),
	{"POST", "/interrupt", "", ""}, post("/interrupt", "not json"), post("/interrupt", `{"prompt_id": "x"}`),
	post("/free", "{}"), post("/free", "not json"), post("/history", "{}"), post("/history", "not json"),
	post("/history", `{"delete": ["x"]}`), {"POST", "/upload/image", "", "multipart/form-data; boundary=xx"},
	{"POST", "/upload/image", "x", "text/plain"}, post("/settings/Comfy.ApiDiff", `"v"`), post("/settings", "not json"),
	post("/userdata/apidiff.json", "{}"), post("/userdata/apidiff.json?overwrite=false", "{}"),
	{"DELETE", "/userdata/nope.json", "", ""}, post("/userdata/apidiff.json/move/apidiff2.json", ""),
	{"DELETE", "/userdata/apidiff2.json", "", ""}, post("/userdata/nope.json/move/z.json", ""),
}

// answer is what a server answered, reduced to what is compared.
type answer struct {
	status int
	shape  string
}

func main() {
	a := flag.String("a", "127.0.0.1:8188", "the reference server (ComfyUI)")
	b := flag.String("b", "127.0.0.1:18377", "the server compared (forgeflow)")
	flag.Parse()
	diffs := 0
	for _, r := range requests {
		x, y := do(*a, r), do(*b, r)
		if x == y {
			fmt.Printf("same %s %s %.60s: %d %s\n", r.method, r.path, r.body, x.status, x.shape)
			continue
		}
		diffs++
		fmt.Printf("DIFF %s %s %.60s\n  a: %d %s\n  b: %d %s\n", r.method, r.path, r.body, x.status, x.shape, y.status, y.shape)
	}
	ea, err := events(*a)
	if err != nil {
		fmt.Fprintln(os.Stderr, "apidiff:", *a, err)
		os.Exit(1)
	}
	eb, err := events(*b)
	if err != nil {
		fmt.Fprintln(os.Stderr, "apidiff:", *b, err)
		os.Exit(1)
	}
	if slices.Equal(ea, eb) {
		fmt.Printf("same websocket messages of a prompt:\n  %s\n", strings.Join(ea, "\n  "))
	} else {
		diffs++
		fmt.Printf("DIFF websocket messages of a prompt\n  a: %s\n  b: %s\n", strings.Join(ea, "\n     "), strings.Join(eb, "\n     "))
	}
	fmt.Printf("%d requests and one prompt's messages, %d differences\n", len(requests), diffs)
}

var client = &http.Client{Timeout: 30 * time.Second}

// do sends r to the server at addr.
func do(addr string, r request) answer {
	var body io.Reader
	if r.body != "" || r.contentType != "" {
		body = strings.NewReader(r.body)
	}
	req, err := http.NewRequest(r.method, "http://"+addr+r.path, body)
	if err != nil {
		return answer{shape: err.Error()}
	}
	if r.contentType != "" {
		req.Header.Set("Content-Type", r.contentType)
	}
	resp, err := client.Do(req)
	if err != nil {
		return answer{shape: err.Error()}
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if resp.StatusCode >= 400 && r.path != "/prompt" {
		// ComfyUI answers most errors with an empty or a text body, forgeflow with
		// a JSON error: only the status is compared.
		return answer{resp.StatusCode, "an error"}
	}
	return answer{resp.StatusCode, shape(resp.Header.Get("Content-Type"), data, r.path == "/prompt")}
}

// shape describes an answer: the kind of a JSON value and the keys of an object (for a
// prompt refusal, its error type and node_errors; forgeflow's own feature flags left
// out), else whether there was a body.
func shape(contentType string, data []byte, isPrompt bool) string {
	if !strings.Contains(contentType, "json") {
		if len(bytes.TrimSpace(data)) == 0 {
			return "no body"
		}
		return "a body"
	}
	var v any
	if json.Unmarshal(data, &v) != nil {
		return "invalid JSON"
	}
	m, ok := v.(map[string]any)
	if !ok {
		return fmt.Sprintf("JSON %T", v)
	}
	if e, ok := m["error"].(map[string]any); ok && isPrompt {
		return fmt.Sprintf("error %v, node_errors %s", e["type"], nodeErrors(m["node_errors"]))
	}
	ids := len(m) > 0
	for k := range m {
		if strings.HasPrefix(k, "forgeflow_") {
			delete(m, k)
		}
		ids = ids && len(k) == 36 && strings.Count(k, "-") == 4
	}
	if ids {
		// /history: the prompt ids differ, the entries' keys must not.
		entry, _ := m[keys(m)[0]].(map[string]any)
		return fmt.Sprintf("JSON object of %d prompt ids, an entry has %s", len(m), strings.Join(keys(entry), ","))
	}
	return "JSON object " + strings.Join(keys(m), ",")
}

// nodeErrors lists node_errors as node:type,type.
func nodeErrors(v any) string {
	m, _ := v.(map[string]any)
	var out []string
	for _, id := range keys(m) {
		ne, _ := m[id].(map[string]any)
		errs, _ := ne["errors"].([]any)
		var types []string
		for _, e := range errs {
			em, _ := e.(map[string]any)
			types = append(types, fmt.Sprint(em["type"]))
		}
		out = append(out, id+":"+strings.Join(types, ","))
	}
	return "{" + strings.Join(out, " ") + "}"
}

func keys(m map[string]any) []string {
	k := make([]string, 0, len(m))
	for s := range m {
		k = append(k, s)
	}
	sort.Strings(k)
	return k
}

// events queues a prompt on addr as a websocket client that supports preview metadata
// and lists the messages it gets up to the prompt's end ("executing" with node null):
// type, data keys and node. The first node's color is new on every call, so that
// nothing is cached.
func events(addr string) ([]string, error) {
	c, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws?clientId=apidiff", nil)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if err := c.WriteMessage(websocket.TextMessage, []byte(`{"type": "feature_flags", "data": {"supports_preview_metadata": true}}`)); err != nil {
		return nil, err
	}
	color := time.Now().UnixNano() % 0xffffff
	body := fmt.Sprintf(`{"client_id": "apidiff", "prompt": {
		"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": %d}},
		"2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
		"3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "apidiff"}}}}`, color)
	resp, err := client.Post("http://"+addr+"/prompt", "application/json", strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	var out []string
	for {
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		typ, data, err := c.ReadMessage()
		if err != nil {
			return out, err
		}
		if typ == websocket.BinaryMessage {
			out = append(out, "binary")
			continue
		}
		var m struct {
			Type string         `json:"type"`
			Data map[string]any `json:"data"`
		}
		if err := json.Unmarshal(data, &m); err != nil {
			return out, err
		}
		switch m.Type {
		case "progress_state", "status":
			// progress_state is throttled in forgeflow; status messages depend on
			// the queue's state, not on the prompt.
			continue
		case "feature_flags":
			delete(m.Data, "forgeflow_ws_prompt")
		}
		line := m.Type + " " + strings.Join(keys(m.Data), ",")
		if node, ok := m.Data["node"]; ok {
			line += fmt.Sprintf(" node=%v", node)
		}
		out = append(out, line)
		if m.Type == "executing" && m.Data["node"] == nil {
			return out, nil
		}
	}
}
