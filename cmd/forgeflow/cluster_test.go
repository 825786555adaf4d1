//go:build integration

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is a bytes.Buffer safe to write from a command's goroutine and read
// from the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestClusterCommands runs the cluster through the commands: forgeflow nats, a serve
// front that only accepts (--workers 0), a forgeflow worker, and run --queue. The
// front's /view serves the worker's output through the cluster.
func TestClusterCommands(t *testing.T) {
	const cliPromptID = "00000000-0000-4000-8000-0000000000c1" // POST /prompt takes canonical UUIDs
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var natsOut, natsErr lockedBuffer
	natsDone := make(chan int, 1)
	go func() {
		natsDone <- run(ctx, []string{"nats", "--store", t.TempDir(), "--port", "0"}, &natsOut, &natsErr)
	}()
	urlRE := regexp.MustCompile(`nats://[0-9.:]+`)
	deadline := time.Now().Add(30 * time.Second)
	for urlRE.FindString(natsOut.String()) == "" {
		if time.Now().After(deadline) {
			t.Fatalf("forgeflow nats did not start: %s %s", natsOut.String(), natsErr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	natsURL := urlRE.FindString(natsOut.String())

	front, stopFront := startServe(t, "--base-directory", t.TempDir(), "--queue", natsURL, "--workers", "0")
	workerBase := t.TempDir()
	var workerErr lockedBuffer
	workerCtx, stopWorker := context.WithCancel(ctx)
	workerDone := make(chan int, 1)
	go func() {
		workerDone <- run(workerCtx, []string{"worker", "--queue", natsURL, "--name", "gpu0", "--base-directory", workerBase}, io.Discard, &workerErr)
	}()

	resp, err := http.Post(front+"/prompt", "application/json", strings.NewReader(`{"prompt": `+goodPrompt+`, "prompt_id": "`+cliPromptID+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /prompt: %s", resp.Status)
	}
	var entry struct {
		Outputs map[string]struct {
			Images []struct{ Filename, Subfolder, Type string }
		}
	}
	deadline = time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(front + "/history/" + cliPromptID)
		if err != nil {
			t.Fatal(err)
		}
		var h map[string]json.RawMessage
		json.NewDecoder(resp.Body).Decode(&h)
		resp.Body.Close()
		if raw, ok := h[cliPromptID]; ok {
			json.Unmarshal(raw, &entry)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the worker did not run the prompt: %s", workerErr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	img := entry.Outputs["2"].Images
	if len(img) != 1 || img[0].Subfolder != "gpu0" {
		t.Fatalf("outputs %+v, want one image in the worker's subfolder", entry.Outputs)
	}
	if _, err := os.Stat(filepath.Join(workerBase, "output", "gpu0", img[0].Filename)); err != nil {
		t.Errorf("the worker's file: %v", err)
	}
	resp, err = http.Get(front + "/view?filename=" + img[0].Filename + "&subfolder=gpu0&type=output")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.HasPrefix(body, []byte("\x89PNG")) {
		t.Fatalf("/view through the front: %s, %d bytes", resp.Status, len(body))
	}

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a.json"), []byte(strings.Replace(goodPrompt, `"t"`, `"batch"`, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCLI(t, ctx, "run", "--queue", natsURL, "--base-directory", t.TempDir(), dir)
	if code != exitOK || !strings.Contains(out, "1 of 1 workflows succeeded") || !strings.Contains(out, "queued as") {
		t.Fatalf("run --queue: exit %d\n%s\n%s", code, out, errOut)
	}

	stopWorker()
	if code := <-workerDone; code != exitOK {
		t.Errorf("worker exit %d: %s", code, workerErr.String())
	}
	if code := stopFront(); code != exitOK {
		t.Errorf("serve exit %d", code)
	}
	cancel()
	if code := <-natsDone; code != exitOK {
		t.Errorf("nats exit %d: %s", code, natsErr.String())
	}
}
