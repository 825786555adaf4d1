//go:build integration

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/forgeflow/forgeflow/internal/testenv"
)

// The end-to-end runs of the program (build tag integration): every example workflow
// through `forgeflow run`, and `forgeflow serve` answering HTTP and the websocket.

// TestWorkflowsRun runs the example workflows folder with the CLI and checks what it
// saved.
func TestWorkflowsRun(t *testing.T) {
	testenv.EndToEnd(t)
	base := t.TempDir()
	code, out, errOut := runCLI(t, context.Background(), "run", "--base-directory", base, workflowsDir)
	if code != exitOK {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	for _, want := range []string{"WORKFLOW", "blend_ui.json", "invert_api.json", "blur_sharpen_api.json", "4 of 4 workflows succeeded", "invert_ui.json", "SaveImage #"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// invert_ui.json is the same prompt as invert_api.json: as in ComfyUI, the second run
	// is served from the cache and saves nothing new.
	if _, err := os.Stat(filepath.Join(base, "output", "examples", "invert_00002_.png")); err == nil {
		t.Error("an identical prompt was executed again instead of coming from the cache")
	}
	for _, f := range []string{"examples/invert_00001_.png", "examples/blend_00001_.png", "examples/blur_sharpen_00001_.png", "examples/blur_sharpen_00002_.png"} {
		if _, err := os.Stat(filepath.Join(base, "output", f)); err != nil {
			t.Errorf("output %s missing: %v", f, err)
		}
	}
	// The blend is half red, half blue.
	img := decodePNG(t, filepath.Join(base, "output", "examples/blend_00001_.png"))
	r, g, b, _ := img.At(10, 10).RGBA()
	if d := int(r>>8) - 128; d < -1 || d > 1 || g>>8 != 0 || int(b>>8)-128 < -1 || int(b>>8)-128 > 1 {
		t.Errorf("blend pixel (%d,%d,%d), want about (128,0,128)", r>>8, g>>8, b>>8)
	}

	// A saved PNG carries its prompt and workflow: convert and run read it back.
	saved := filepath.Join(base, "output", "examples", "blend_00001_.png")
	code, out, errOut = runCLI(t, context.Background(), "convert", saved)
	if code != exitOK || !strings.Contains(out, `"ImageBlend"`) || !strings.Contains(out, `"examples/blend"`) {
		t.Fatalf("convert of a saved PNG: exit %d\n%s\n%s", code, out, errOut)
	}
	code, out, errOut = runCLI(t, context.Background(), "run", "--base-directory", base, saved)
	if code != exitOK || !strings.Contains(out, "examples/blend_00002_.png") {
		t.Fatalf("run of a saved PNG: exit %d\n%s\n%s", code, out, errOut)
	}
	code, out, _ = runCLI(t, context.Background(), "run", "--disable-metadata", "--base-directory", base, filepath.Join(workflowsDir, "invert_api.json"))
	if code != exitOK {
		t.Fatalf("--disable-metadata run: exit %d\n%s", code, out)
	}
	if code, _, _ := runCLI(t, context.Background(), "convert", filepath.Join(base, "output", "examples", "invert_00002_.png")); code != exitFailed {
		t.Fatalf("a PNG saved with --disable-metadata has no workflow to convert, exit %d", code)
	}

	// The LoadImage examples need an input image.
	in := filepath.Join(base, "input")
	os.MkdirAll(in, 0o755)
	writePNG(t, filepath.Join(in, "example.png"), 40, 30)
	code, out, errOut = runCLI(t, context.Background(), "run", "--base-directory", base, filepath.Join(workflowsDir, "input-image"))
	if code != exitOK {
		t.Fatalf("input-image: exit %d\n%s\n%s", code, out, errOut)
	}
	if _, err := os.Stat(filepath.Join(base, "output", "examples/loaded_mask_00001_.png")); err != nil {
		t.Error(err)
	}
}

func writePNG(t *testing.T, path string, w, h int) {
	t.Helper()
	m := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			m.SetNRGBA(x, y, color.NRGBA{uint8(x * 6), uint8(y * 8), 100, uint8(255 - x)})
		}
	}
	var buf bytes.Buffer
	png.Encode(&buf, m)
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func decodePNG(t *testing.T, path string) image.Image {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// startServe runs serve in the background and returns its URL and a stop function
// that cancels it and returns its exit code.
func startServe(t *testing.T, args ...string) (string, func() int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan string, 1)
	done := make(chan int, 1)
	var errb bytes.Buffer
	go func() {
		done <- serve(ctx, append(args, "--port", "0"), io.Discard, &errb, func(a string) { addrc <- a })
	}()
	select {
	case addr := <-addrc:
		return "http://" + addr, func() int {
			cancel()
			select {
			case code := <-done:
				return code
			case <-time.After(20 * time.Second):
				t.Fatal("serve did not shut down")
				return -1
			}
		}
	case code := <-done:
		cancel()
		t.Fatalf("serve exited %d: %s", code, errb.String())
	case <-time.After(20 * time.Second):
		cancel()
		t.Fatal("serve did not start")
	}
	return "", nil
}

func TestServe(t *testing.T) {
	testenv.EndToEnd(t)
	base := t.TempDir()
	url, stop := startServe(t, "--base-directory", base, "--enable-cors-header")
	resp, err := http.Get(url + "/api/system_stats")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("system_stats %d %v", resp.StatusCode, resp.Header)
	}
	resp.Body.Close()
	// The websocket tells the prompt's client when it is done (executing, node null),
	// after its history entry is stored.
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(url, "http")+"/ws?clientId=serve-test", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	resp, err = http.Post(url+"/prompt", "application/json", strings.NewReader(`{"client_id": "serve-test", "prompt": `+goodPrompt+`}`))
	if err != nil {
		t.Fatal(err)
	}
	var ans struct {
		PromptID string `json:"prompt_id"`
	}
	json.NewDecoder(resp.Body).Decode(&ans)
	resp.Body.Close()
	if resp.StatusCode != 200 || ans.PromptID == "" {
		t.Fatalf("POST /prompt: %d", resp.StatusCode)
	}
	history := func(url string) map[string]any {
		resp, err := http.Get(url + "/history/" + ans.PromptID)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var h map[string]any
		json.NewDecoder(resp.Body).Decode(&h)
		return h
	}
	// The worker runs it: wait for its end, then the history holds it.
	ws.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		var m struct {
			Type string `json:"type"`
			Data struct {
				Node     *string `json:"node"`
				PromptID string  `json:"prompt_id"`
			} `json:"data"`
		}
		typ, data, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("prompt never finished: %v", err)
		}
		if typ == websocket.TextMessage && json.Unmarshal(data, &m) == nil && m.Type == "executing" && m.Data.Node == nil && m.Data.PromptID == ans.PromptID {
			break
		}
	}
	if len(history(url)) != 1 {
		t.Fatal("finished prompt not in the history")
	}
	if _, err := os.Stat(filepath.Join(base, "output", "t_00001_.png")); err != nil {
		t.Error(err)
	}
	if code := stop(); code != exitOK {
		t.Fatalf("serve exit %d", code)
	}
	if _, err := os.Stat(filepath.Join(base, "user", "forgeflow.db")); err != nil {
		t.Errorf("queue database not in the user folder: %v", err)
	}
	// The history is durable: a restarted server still has the prompt.
	url, stop = startServe(t, "--base-directory", base)
	if len(history(url)) != 1 {
		t.Error("history lost across a restart")
	}
	if code := stop(); code != exitOK {
		t.Fatalf("serve exit %d", code)
	}
}
