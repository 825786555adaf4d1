package server

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/forgeflow/forgeflow/executor"
	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// readUntil reads c until a message of one of types arrives and returns it; it fails
// the test on a message of a type in forbid.
func readUntil(t *testing.T, c *websocket.Conn, types []string, forbid ...string) wsMsg {
	t.Helper()
	for {
		m := readWS(t, c)
		for _, f := range forbid {
			if m.typ == f {
				t.Fatalf("unexpected %s: %s", m.typ, m.raw)
			}
		}
		for _, typ := range types {
			if m.typ == typ {
				return m
			}
		}
	}
}

func wsSend(t *testing.T, c *websocket.Conn, v any) {
	t.Helper()
	var err error
	if s, ok := v.(string); ok {
		err = c.WriteMessage(websocket.TextMessage, []byte(s))
	} else {
		err = c.WriteJSON(v)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// TestWSPrompt: a prompt message is queued as POST /prompt queues it, durably before
// the answer, with the socket's id as its client id; the answer carries the request
// id (a string or a number, as sent).
func TestWSPrompt(t *testing.T) {
	ts := newTestServer(t, nil)
	hs := httptest.NewServer(ts)
	defer hs.Close()
	c := dialWS(t, hs.URL, "editor")
	readWS(t, c)

	wsSend(t, c, `{"type": "prompt", "id": "r1", "data": {"prompt": `+sinkPrompt+`, "prompt_id": "`+uuid1+`", "client_id": "someone-else",
		"extra_data": {"extra_pnginfo": {"workflow": {"id": "wf"}}}, "partial_execution_targets": ["1"]}}`)
	m := readUntil(t, c, []string{"prompt_result", "prompt_error"}, "prompt_error")
	jsonEqual(t, m.raw, `{"type": "prompt_result", "data": {"id": "r1", "prompt_id": "`+uuid1+`", "number": 0, "node_errors": {}}}`)
	// On disk when answered: the store holds it, with this socket as its client.
	p := ts.pending(t)
	if len(p) != 1 || p[0].ID != uuid1 || p[0].ClientID() != "editor" || p[0].ExtraPNGInfo()["workflow"] == nil {
		t.Fatalf("queued: %+v", p)
	}

	wsSend(t, c, `{"type": "prompt", "id": 7, "data": {"prompt": `+sinkPrompt+`, "front": true}}`)
	m = readUntil(t, c, []string{"prompt_result", "prompt_error"}, "prompt_error")
	if m.data["id"] != float64(7) || m.data["number"] != float64(-1) || !isCanonicalUUID(m.data["prompt_id"].(string)) {
		t.Errorf("second answer %s", m.raw)
	}
	if p := ts.pending(t); len(p) != 2 || p[0].ID != m.data["prompt_id"] {
		t.Errorf("front prompt not first: %v", p)
	}
}

// TestWSPromptSameAsHTTP: every refusal is the HTTP answer's body, with the request
// id and the HTTP status, for the same bodies.
func TestWSPromptSameAsHTTP(t *testing.T) {
	ts := newTestServer(t, func(o *Options) { o.MaxPromptSize = 4096 })
	pushJob(t, ts.queue, uuid7, nil)
	hs := httptest.NewServer(ts)
	defer hs.Close()
	c := dialWS(t, hs.URL, "editor")
	readWS(t, c)
	bodies := []string{
		`{"client_id": "x"}`,
		`{"prompt": {"5": {"inputs": {}}}}`,
		`{"prompt": {"1": {"class_type": "Nope", "inputs": {}}}}`,
		`{"prompt": {"3": {"class_type": "Sink", "inputs": {}}}}`,
		`{"prompt": ` + sinkPrompt + `, "prompt_id": "P1"}`,
		`{"prompt": ` + sinkPrompt + `, "prompt_id": "` + uuid7 + `"}`,
		`{"prompt": ` + sinkPrompt + `, "number": "inf"}`,
		`{"prompt": [1]}`,
		`{"prompt": {"1": {"class_type": "` + strings.Repeat("x", 5000) + `"}}}`,
	}
	for i, body := range bodies {
		rec := ts.do(t, "POST", "/prompt", strings.NewReader(body))
		wsSend(t, c, fmt.Sprintf(`{"type": "prompt", "id": %d, "data": %s}`, i, body))
		m := readUntil(t, c, []string{"prompt_result", "prompt_error"})
		if m.typ != "prompt_error" || m.data["id"] != float64(i) || m.data["status"] != float64(rec.Code) {
			t.Errorf("body %d: HTTP %d, websocket %s", i, rec.Code, m.raw)
			continue
		}
		var httpBody map[string]any
		json.Unmarshal(rec.Body.Bytes(), &httpBody)
		for k, v := range httpBody {
			if !reflect.DeepEqual(m.data[k], v) {
				t.Errorf("body %d: %s: websocket %v, HTTP %v", i, k, m.data[k], v)
			}
		}
	}
	if p := ts.pending(t); len(p) != 1 {
		t.Errorf("refused prompts reached the queue: %v", p)
	}

	// A store that fails (500) and a server without an engine (503).
	full := newTestServer(t, func(o *Options) {
		o.Engine = newTestEngine(t, t.TempDir(), func(q executor.Queue) executor.Queue { return failingPush{q} })
	})
	none := newTestServer(t, func(o *Options) { o.Engine = nil })
	for _, tc := range []struct {
		ts     *testServer
		status int
		err    string
	}{{full, 500, "cannot queue prompt"}, {none, 503, errNoEngine.Error()}} {
		hs := httptest.NewServer(tc.ts)
		c := dialWS(t, hs.URL, "")
		readWS(t, c)
		wsSend(t, c, `{"type": "prompt", "id": "x", "data": {"prompt": `+sinkPrompt+`}}`)
		m := readUntil(t, c, []string{"prompt_result", "prompt_error"})
		if m.typ != "prompt_error" || m.data["status"] != float64(tc.status) || m.data["error"] != tc.err {
			t.Errorf("want %d %q: %s", tc.status, tc.err, m.raw)
		}
		hs.Close()
	}
}

// TestWSMalformed: every message that cannot be a request gets one error answer
// (TYPE_error when the type is known, else "error") and the socket stays open;
// messages of unknown type get nothing.
func TestWSMalformed(t *testing.T) {
	ts := newTestServer(t, nil)
	hs := httptest.NewServer(ts)
	defer hs.Close()
	c := dialWS(t, hs.URL, "m")
	readWS(t, c)
	for _, tc := range []struct{ msg, typ string }{
		{`not json`, "error"},
		{`[1, 2]`, "error"},
		{`{"type": 5}`, "error"},
		{`{"data": {}}`, "error"},
		{`{"type": "prompt", "id": {"a": 1}, "data": {}}`, "prompt_error"},
		{`{"type": "prompt", "id": "` + strings.Repeat("x", 300) + `", "data": {}}`, "prompt_error"},
		{`{"type": "prompt", "id": "a"}`, "prompt_error"},
		{`{"type": "prompt", "id": "a", "data": [1]}`, "prompt_error"},
		{`{"type": "prompt", "id": "a", "data": "{}"}`, "prompt_error"},
		{`{"type": "interrupt", "id": "a", "data": 5}`, "interrupt_error"},
		{`{"type": "queue", "id": "a", "data": {"delete": 5}}`, "queue_error"},
	} {
		wsSend(t, c, tc.msg)
		wsSend(t, c, `{"type": "hello", "id": "ignored"}`) // unknown: no answer
		m := readWS(t, c)
		if m.typ != tc.typ || m.data["status"] != float64(400) || m.data["error"] == nil {
			t.Errorf("%s: answer %s, want %s", tc.msg, m.raw, tc.typ)
		}
	}
	// The unknown messages got nothing: the next answer is this request's.
	wsSend(t, c, `{"type": "queue", "id": "last", "data": {"clear": true}}`)
	jsonEqual(t, readUntil(t, c, []string{"queue_result", "queue_error"}, "error").raw, `{"type": "queue_result", "data": {"id": "last"}}`)
}

// TestWSFlood: a client sending thousands of bad messages gets at most
// errorReplyBurst + errorReplyRate a second of error answers, and the server goes on
// serving it and others.
func TestWSFlood(t *testing.T) {
	ts := newTestServer(t, func(o *Options) { o.MaxWSMessageRate = 1e9 }) // the error budget alone
	hs := httptest.NewServer(ts)
	defer hs.Close()
	c := dialWS(t, hs.URL, "flood")
	readWS(t, c)
	start := time.Now()
	const n = 3000
	for range n {
		wsSend(t, c, `{"type": "prompt", "id": {}}`)
	}
	wsSend(t, c, `{"type": "prompt", "id": "after", "data": {"prompt": `+sinkPrompt+`}}`)
	errs := 0
	for {
		m := readWS(t, c)
		if m.typ == "prompt_error" && m.data["id"] == nil {
			errs++
			continue
		}
		if m.typ == "prompt_result" && m.data["id"] == "after" {
			break
		}
	}
	if limit := errorReplyBurst + int(time.Since(start).Seconds()*errorReplyRate) + 1; errs > limit {
		t.Errorf("%d error answers to %d bad messages in %s, want at most %d", errs, n, time.Since(start), limit)
	}
	other := dialWS(t, hs.URL, "other")
	readWS(t, other)
	wsSend(t, other, `{"type": "queue", "id": 1, "data": {}}`)
	readUntil(t, other, []string{"queue_result"})

	// Under the default message rate, the flooding client is disconnected; the others
	// are served on.
	ts = newTestServer(t, nil)
	hs2 := httptest.NewServer(ts)
	defer hs2.Close()
	flood := dialWS(t, hs2.URL, "flood")
	readWS(t, flood)
	calm := dialWS(t, hs2.URL, "calm")
	readWS(t, calm)
	for range n {
		if flood.WriteMessage(websocket.TextMessage, []byte(`{"type": "prompt", "id": {}}`)) != nil {
			break
		}
	}
	if !disconnected(flood) {
		t.Error("a client over the message rate stayed connected")
	}
	wsSend(t, calm, `{"type": "prompt", "id": "calm", "data": {"prompt": `+sinkPrompt+`}}`)
	readUntil(t, calm, []string{"prompt_result"}, "prompt_error")
}

// TestWSOversized: a prompt body over MaxPromptSize is refused with HTTP's 413 and
// the socket stays; a prompt message over that and its envelope, or another message
// over MaxWSMessageSize, closes the connection (1009), and the server serves the next
// one.
func TestWSOversized(t *testing.T) {
	ts := newTestServer(t, func(o *Options) { o.MaxPromptSize = 2048; o.MaxWSMessageSize = 4096 })
	hs := httptest.NewServer(ts)
	defer hs.Close()
	c := dialWS(t, hs.URL, "big")
	readWS(t, c)
	big := `{"prompt": ` + sinkPrompt + `, "extra_data": {"pad": "` + strings.Repeat("x", 4096) + `"}}`
	wsSend(t, c, `{"type": "prompt", "id": "big", "data": `+big+`}`)
	m := readUntil(t, c, []string{"prompt_result", "prompt_error"})
	jsonEqual(t, m.raw, `{"type": "prompt_error", "data": {"id": "big", "status": 413, "error": "request body too large", "details": "limit is 2048 bytes", "node_errors": {}}}`)
	if rec := ts.do(t, "POST", "/prompt", strings.NewReader(big)); rec.Code != 413 {
		t.Errorf("HTTP answers the same body %d", rec.Code)
	}

	for _, msg := range []string{
		`{"type": "prompt", "id": "huge", "data": {"x": "` + strings.Repeat("x", int(ts.wsMessageLimit())) + `"}}`,
		`{"type": "queue", "id": "big", "data": {"delete": ["` + strings.Repeat("x", 5000) + `"]}}`,
	} {
		wsSend(t, c, msg)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			_, _, err := c.ReadMessage()
			if err == nil {
				continue
			}
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != websocket.CloseMessageTooBig {
				t.Errorf("after an oversized message: %v, want close 1009", err)
			}
			break
		}
		c = dialWS(t, hs.URL, "big")
		readWS(t, c)
		wsSend(t, c, `{"type": "prompt", "id": "ok", "data": {"prompt": `+sinkPrompt+`}}`)
		readUntil(t, c, []string{"prompt_result"}, "prompt_error")
	}
}

// slowPush holds each Push until release is closed, counting the pushes that stored
// a prompt.
type slowPush struct {
	executor.Queue
	entered chan struct{}
	release chan struct{}
	pushes  *atomic.Int32
}

func (q slowPush) Push(ctx context.Context, j *executor.Job, o executor.PushOptions) (float64, error) {
	q.entered <- struct{}{}
	<-q.release
	n, err := q.Queue.Push(ctx, j, o)
	if err == nil {
		q.pushes.Add(1)
	}
	return n, err
}

// TestWSClosedMidRequest: a socket that closes while its prompt is being stored does
// not stop the prompt being queued, once; sending it again with the same prompt_id
// (what a client does when it cannot know the outcome) is refused as a duplicate, so
// it is still queued exactly once.
func TestWSClosedMidRequest(t *testing.T) {
	var pushes atomic.Int32
	entered, release := make(chan struct{}, 4), make(chan struct{})
	ts := newTestServer(t, func(o *Options) {
		o.Engine = newTestEngine(t, t.TempDir(), func(q executor.Queue) executor.Queue {
			return slowPush{Queue: q, entered: entered, release: release, pushes: &pushes}
		})
	})
	hs := httptest.NewServer(ts)
	defer hs.Close()
	c := dialWS(t, hs.URL, "gone")
	readWS(t, c)
	wsSend(t, c, `{"type": "prompt", "id": "r", "data": {"prompt": `+sinkPrompt+`, "prompt_id": "`+uuid2+`"}}`)
	<-entered
	c.Close() // the client goes away while the prompt is being stored
	time.Sleep(50 * time.Millisecond)
	close(release)
	waitFor(t, func() bool { return len(ts.pending(t)) == 1 })

	again := dialWS(t, hs.URL, "gone")
	readWS(t, again)
	wsSend(t, again, `{"type": "prompt", "id": "r", "data": {"prompt": `+sinkPrompt+`, "prompt_id": "`+uuid2+`"}}`)
	m := readUntil(t, again, []string{"prompt_result", "prompt_error"})
	if m.typ != "prompt_error" || !strings.Contains(string(m.raw), "Prompt id already queued") {
		t.Errorf("resend: %s", m.raw)
	}
	if p := ts.pending(t); len(p) != 1 || p[0].ID != uuid2 || pushes.Load() != 1 {
		t.Errorf("queued %v after %d pushes, want the prompt once", p, pushes.Load())
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestWSInterruptAndQueue: over the socket, a queue delete removes a pending prompt,
// an interrupt naming the running prompt stops it (its events come to this socket),
// and a clear empties the queue.
func TestWSInterruptAndQueue(t *testing.T) {
	ts := newTestServer(t, func(o *Options) { o.Engine = newTestEngine(t, t.TempDir(), nil, blockNode{}) })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go ts.Forward(ctx)
	runWorker(t, ts.engine)
	hs := httptest.NewServer(ts)
	defer hs.Close()
	c := dialWS(t, hs.URL, "ctl")
	readWS(t, c)
	block := `{"1": {"class_type": "Block", "inputs": {}}}`
	for i, id := range []string{uuid1, uuid2, uuid3} {
		wsSend(t, c, fmt.Sprintf(`{"type": "prompt", "id": %d, "data": {"prompt": %s, "prompt_id": %q}}`, i, block, id))
		readUntil(t, c, []string{"prompt_result"}, "prompt_error")
	}
	waitFor(t, func() bool { return ts.engine.Running() == uuid1 })

	wsSend(t, c, `{"type": "queue", "id": "d", "data": {"delete": ["`+uuid2+`"]}}`)
	jsonEqual(t, readUntil(t, c, []string{"queue_result"}, "queue_error").raw, `{"type": "queue_result", "data": {"id": "d"}}`)
	if p := ts.pending(t); len(p) != 1 || p[0].ID != uuid3 {
		t.Fatalf("pending after delete: %v", p)
	}
	wsSend(t, c, `{"type": "interrupt", "id": "i", "data": {"prompt_id": "`+uuid1+`"}}`)
	for {
		m := readUntil(t, c, []string{"interrupt_result", "execution_interrupted"})
		if m.typ == "interrupt_result" {
			jsonEqual(t, m.raw, `{"type": "interrupt_result", "data": {"id": "i", "prompt_id": "`+uuid1+`"}}`)
			continue
		}
		if m.data["prompt_id"] != uuid1 {
			t.Fatalf("interrupted %s", m.raw)
		}
		break
	}
	// uuid3 runs next: a clear leaves it (it is no longer pending) and drops uuid5; a
	// global interrupt (no data) stops uuid3.
	waitFor(t, func() bool { return ts.engine.Running() == uuid3 })
	wsSend(t, c, `{"type": "prompt", "id": 5, "data": {"prompt": `+block+`, "prompt_id": "`+uuid5+`"}}`)
	readUntil(t, c, []string{"prompt_result"}, "prompt_error")
	wsSend(t, c, `{"type": "queue", "id": "c", "data": {"clear": true}}`)
	readUntil(t, c, []string{"queue_result"}, "queue_error")
	if p := ts.pending(t); len(p) != 0 {
		t.Fatalf("pending after clear: %v", p)
	}
	wsSend(t, c, `{"type": "interrupt", "id": "g"}`)
	m := readUntil(t, c, []string{"execution_interrupted"})
	if m.data["prompt_id"] != uuid3 {
		t.Errorf("global interrupt stopped %s", m.raw)
	}
}

// stepNode is an output node that reports two steps, each with a PNG preview.
type stepNode struct{ png []byte }

func (stepNode) Schema() *graph.Schema { return &graph.Schema{Name: "Steps", OutputNode: true} }

func (n stepNode) Run(ctx context.Context, env *nodes.Env, in nodes.Inputs) (nodes.Result, error) {
	for i := 1; i <= 2; i++ {
		env.Progress(i, 2)
		env.Preview(nodes.PreviewImage{Format: "PNG", Data: n.png})
	}
	return nodes.Result{}, nil
}

// TestWSPromptEventsSubgraphIDs: the events of a prompt queued over the socket come
// to that socket. Its nodes have the ids ComfyUI's front end gives the nodes inside a
// subgraph ("12:5": instance 12, inner node 5): progress_state and the type-4 preview
// frames (the client announced supports_preview_metadata) carry them as node,
// display and real node id, with no parent, as ComfyUI does for them.
func TestWSPromptEventsSubgraphIDs(t *testing.T) {
	img := []byte("\x89PNG\r\n\x1a\nfake")
	ts := newTestServer(t, func(o *Options) { o.Engine = newTestEngine(t, t.TempDir(), nil, stepNode{png: img}) })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go ts.Forward(ctx)
	runWorker(t, ts.engine)
	hs := httptest.NewServer(ts)
	defer hs.Close()
	c := dialWS(t, hs.URL, "sub")
	readWS(t, c)
	wsSend(t, c, `{"type": "feature_flags", "data": {"supports_preview_metadata": true}}`)
	readUntil(t, c, []string{"feature_flags"})
	bystander := dialWS(t, hs.URL, "bystander")
	readWS(t, bystander)

	wsSend(t, c, `{"type": "prompt", "id": "s", "data": {"prompt": {"12:5": {"class_type": "Steps", "inputs": {}}}, "prompt_id": "`+uuid4+`"}}`)
	var state map[string]any
	frames := 0
	for done := false; !done; {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		typ, data, err := c.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if typ == websocket.BinaryMessage {
			if binary.BigEndian.Uint32(data[:4]) != binaryPreviewImageWithMetadata {
				t.Fatalf("preview frame type %d", binary.BigEndian.Uint32(data[:4]))
			}
			n := binary.BigEndian.Uint32(data[4:8])
			jsonEqual(t, data[8:8+n], `{"node_id": "12:5", "prompt_id": "`+uuid4+`", "display_node_id": "12:5", "parent_node_id": null,
				"real_node_id": "12:5", "image_type": "image/png"}`)
			frames++
			continue
		}
		var m struct {
			Type string         `json:"type"`
			Data map[string]any `json:"data"`
		}
		json.Unmarshal(data, &m)
		switch m.Type {
		case "progress_state":
			state = m.Data["nodes"].(map[string]any)["12:5"].(map[string]any)
		case "executing":
			done = m.Data["node"] == nil
		case "prompt_error", "execution_error":
			t.Fatalf("%s", data)
		}
	}
	if frames != 2 {
		t.Errorf("%d preview frames, want 2", frames)
	}
	for k, want := range map[string]any{"node_id": "12:5", "display_node_id": "12:5", "parent_node_id": nil, "real_node_id": "12:5",
		"prompt_id": uuid4, "state": "finished"} {
		if !reflect.DeepEqual(state[k], want) {
			t.Errorf("progress_state %s = %v, want %v (%v)", k, state[k], want, state)
		}
	}
	// The other client got only broadcasts (status), none of this prompt's events.
	bystander.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	for {
		typ, data, err := bystander.ReadMessage()
		if err != nil {
			break
		}
		if typ == websocket.BinaryMessage || !strings.Contains(string(data), `"type":"status"`) {
			t.Errorf("bystander got %.120s", data)
		}
	}
}

// TestWSFeatureFlagsFirstOnly: the flags are negotiated by the first message only, as
// in ComfyUI; a later feature_flags message is ignored.
func TestWSFeatureFlagsFirstOnly(t *testing.T) {
	ts := newTestServer(t, nil)
	hs := httptest.NewServer(ts)
	defer hs.Close()
	c := dialWS(t, hs.URL, "late")
	readWS(t, c)
	wsSend(t, c, `{"type": "queue", "id": 1, "data": {}}`)
	readUntil(t, c, []string{"queue_result"})
	wsSend(t, c, `{"type": "feature_flags", "data": {"supports_preview_metadata": true}}`)
	wsSend(t, c, `{"type": "queue", "id": 2, "data": {}}`)
	if m := readWS(t, c); m.typ != "queue_result" {
		t.Errorf("a late feature_flags was answered: %s", m.raw)
	}
	cl := ts.hub.targets("late", false)
	if len(cl) != 1 || cl[0].supports("supports_preview_metadata") {
		t.Errorf("late flags were kept")
	}
	if rec := ts.do(t, "GET", "/features", nil); !strings.Contains(rec.Body.String(), `"forgeflow_ws_prompt":true`) || rec.Code != http.StatusOK {
		t.Errorf("/features: %s", rec.Body)
	}
}

// TestWSPromptGuards: the websocket prompt path is behind the same web-security checks
// as POST /prompt, applied to the handshake: a page of another site, an opaque origin
// or a rebound host name gets no socket, hence cannot queue; the server's own page,
// an API client without an Origin, and an origin CORS was enabled for can.
func TestWSPromptGuards(t *testing.T) {
	for _, tc := range []struct {
		name, cors string
		h          http.Header
		ok         bool
	}{
		{"API client", "", nil, true},
		{"the server's page", "", http.Header{"Origin": {"http://127.0.0.1:8188"}, "Sec-Fetch-Site": {"same-origin"}}, true},
		{"another site", "", http.Header{"Origin": {"http://evil.example"}}, false},
		{"another port", "", http.Header{"Origin": {"http://127.0.0.1:9999"}}, false},
		{"cross-site fetch metadata", "", http.Header{"Origin": {"http://127.0.0.1:8188"}, "Sec-Fetch-Site": {"cross-site"}}, false},
		{"opaque origin", "", http.Header{"Origin": {"null"}}, false},
		{"rebound host name", "", http.Header{"Host": {"evil.example:8188"}, "Origin": {"http://evil.example:8188"}}, false},
		{"CORS for the origin", "http://app.example", http.Header{"Origin": {"http://app.example"}, "Sec-Fetch-Site": {"cross-site"}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t, func(o *Options) { o.CORSOrigin, o.Listen = tc.cors, []string{"127.0.0.1:8188"} })
			hs := httptest.NewServer(ts)
			defer hs.Close()
			h := http.Header{"Host": {"127.0.0.1:8188"}}
			for k, v := range tc.h {
				h[k] = v
			}
			c, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(hs.URL, "http")+"/ws?clientId=g", h)
			if !tc.ok {
				if err == nil {
					c.Close()
				}
				if resp == nil || resp.StatusCode != http.StatusForbidden {
					t.Fatalf("handshake: %v %v, want 403", resp, err)
				}
				if p := ts.pending(t); len(p) != 0 {
					t.Fatalf("queued %v", p)
				}
				return
			}
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			defer c.Close()
			readWS(t, c)
			wsSend(t, c, `{"type": "prompt", "id": 1, "data": {"prompt": `+sinkPrompt+`}}`)
			readUntil(t, c, []string{"prompt_result"}, "prompt_error")
			if p := ts.pending(t); len(p) != 1 || p[0].ClientID() != "g" {
				t.Fatalf("queued %v", p)
			}
		})
	}
}
