package cluster

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestJobsAndWebsocketPrompts: on a cluster, a prompt sent over front A's websocket
// is queued on the cluster and answered on that socket, and its events come back to
// it from the worker that runs it; front B's jobs API lists it and cancels prompts of
// either front, running (through the cluster interrupt) or pending.
func TestJobsAndWebsocketPrompts(t *testing.T) {
	const (
		idShort = "00000000-0000-4000-8000-0000000000a1"
		idLong  = "00000000-0000-4000-8000-0000000000a2"
		idWait  = "00000000-0000-4000-8000-0000000000a3"
	)
	n := startNode(t)
	a := startFront(t, n.ClientURL(), "api", "front-a")
	b := startFront(t, n.ClientURL(), "api", "front-b")
	startWorker(t, n.ClientURL(), "api", "w1", 2*time.Second, nil)
	waitFor(t, 30*time.Second, "the worker's advert", func() bool { return len(a.q.peers.live()) == 1 })

	conn, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(a.http.URL, "http")+"/ws?clientId="+url.QueryEscape("editor"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	type msg struct {
		Type string         `json:"type"`
		Data map[string]any `json:"data"`
	}
	read := func(want func(msg) bool) msg {
		t.Helper()
		for {
			conn.SetReadDeadline(time.Now().Add(30 * time.Second))
			typ, b, err := conn.ReadMessage()
			if err != nil {
				t.Fatalf("websocket: %v", err)
			}
			var m msg
			if typ == websocket.TextMessage && json.Unmarshal(b, &m) == nil && want(m) {
				return m
			}
		}
	}
	send := func(v any) {
		t.Helper()
		if err := conn.WriteJSON(v); err != nil {
			t.Fatal(err)
		}
	}
	read(func(m msg) bool { return m.Type == "status" })
	send(map[string]any{"type": "feature_flags", "data": map[string]any{}})
	if m := read(func(m msg) bool { return m.Type == "feature_flags" }); m.Data["forgeflow_ws_prompt"] != true {
		t.Fatalf("front's flags %v", m.Data)
	}
	// The answer, the start and the end of the short prompt, in whatever order they
	// come: the worker may run it before the front has written the answer.
	send(map[string]any{"type": "prompt", "id": "s", "data": map[string]any{"prompt": workPrompt(10, "short"), "prompt_id": idShort}})
	answered, started, ended := false, false, false
	read(func(m msg) bool {
		switch {
		case m.Type == "prompt_error" || (m.Type == "prompt_result" && m.Data["prompt_id"] != idShort):
			t.Fatalf("answer %v", m)
		case m.Type == "prompt_result":
			answered = true
		case m.Type == "execution_start" && m.Data["prompt_id"] == idShort:
			started = true
		case m.Type == "executing" && m.Data["prompt_id"] == idShort && m.Data["node"] == nil:
			ended = started
		}
		return answered && ended
	})

	type job struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}
	var one job
	waitFor(t, 30*time.Second, "the short prompt completed in front B's jobs API", func() bool {
		getJSON(t, b, "/api/jobs/"+idShort, &one)
		return one.Status == "completed"
	})

	// A long prompt runs on the worker and another waits behind it; B cancels both.
	send(map[string]any{"type": "prompt", "id": "l", "data": map[string]any{"prompt": workPrompt(60000, "long"), "prompt_id": idLong}})
	read(func(m msg) bool { return m.Type == "prompt_result" })
	send(map[string]any{"type": "prompt", "id": "w", "data": map[string]any{"prompt": workPrompt(10, "wait"), "prompt_id": idWait}})
	read(func(m msg) bool { return m.Type == "prompt_result" })
	waitFor(t, 30*time.Second, "the long prompt to run", func() bool { return len(runningOn(b.q)["w1"]) == 1 })
	var list struct {
		Jobs []job `json:"jobs"`
	}
	getJSON(t, b, "/api/jobs?status=pending,in_progress&sort_order=asc", &list)
	if len(list.Jobs) != 2 || list.Jobs[0] != (job{idLong, "in_progress"}) || list.Jobs[1] != (job{idWait, "pending"}) {
		t.Fatalf("front B's unfinished jobs: %+v", list.Jobs)
	}
	code, body := postJSON(t, b, "/api/jobs/cancel", map[string]any{"job_ids": []string{idWait, idLong}})
	if code != http.StatusOK || strings.TrimSpace(string(body)) != `{"cancelled":true}` {
		t.Fatalf("cancel: %d %s", code, body)
	}
	read(func(m msg) bool { return m.Type == "execution_interrupted" && m.Data["prompt_id"] == idLong })
	waitFor(t, 30*time.Second, "the long prompt cancelled in front A's jobs API", func() bool {
		getJSON(t, a, "/api/jobs/"+idLong, &one)
		return one.Status == "cancelled"
	})
	res, err := http.Get(a.http.URL + "/api/jobs/" + idWait)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNotFound {
		t.Errorf("the cancelled pending prompt is still known: %s", res.Status)
	}
}
