package server

import (
	"encoding/binary"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// wsMsg is one received websocket message.
type wsMsg struct {
	binary bool
	typ    string
	data   map[string]any
	raw    []byte
}

func dialWS(t *testing.T, url, clientID string) *websocket.Conn {
	t.Helper()
	u := "ws" + strings.TrimPrefix(url, "http") + "/ws"
	if clientID != "" {
		u += "?clientId=" + clientID
	}
	c, _, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func readWS(t *testing.T, c *websocket.Conn) wsMsg {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	typ, data, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read websocket: %v", err)
	}
	if typ == websocket.BinaryMessage {
		return wsMsg{binary: true, raw: data}
	}
	var m struct {
		Type string         `json:"type"`
		Data map[string]any `json:"data"`
	}
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("websocket text is not JSON: %s", data)
	}
	return wsMsg{typ: m.Type, data: m.Data, raw: data}
}

func TestWebsocketGreetingAndFeatureFlags(t *testing.T) {
	ts := newTestServer(t, nil)
	pushJob(t, ts.queue, "x", nil)
	hs := httptest.NewServer(ts)
	defer hs.Close()

	c := dialWS(t, hs.URL, "me")
	m := readWS(t, c)
	jsonEqual(t, m.raw, `{"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 1}}, "sid": "me"}}`)

	if err := c.WriteJSON(map[string]any{"type": "feature_flags", "data": map[string]any{"supports_preview_metadata": true}}); err != nil {
		t.Fatal(err)
	}
	m = readWS(t, c)
	jsonEqual(t, m.raw, `{"type": "feature_flags", "data": {"supports_preview_metadata": true, "max_upload_size": 104857600, "forgeflow_ws_prompt": true}}`)

	anon := dialWS(t, hs.URL, "")
	m = readWS(t, anon)
	sid, _ := m.data["sid"].(string)
	if m.typ != "status" || len(sid) != 32 {
		t.Fatalf("anonymous client greeting %s: want a generated 32-hex sid", m.raw)
	}
}

func TestWebsocketTargetingAndPreviews(t *testing.T) {
	ts := newTestServer(t, nil)
	hs := httptest.NewServer(ts)
	defer hs.Close()
	a := dialWS(t, hs.URL, "a")
	b := dialWS(t, hs.URL, "b")
	readWS(t, a)
	readWS(t, b)
	// b announces preview metadata support; a does not.
	b.WriteJSON(map[string]any{"type": "feature_flags", "data": map[string]any{"supports_preview_metadata": true}})
	readWS(t, b)

	ts.Publish(Event{Type: "executing", Data: map[string]any{"node": "3", "display_node": "3", "prompt_id": "p"}, ClientID: "a"})
	ts.Publish(Event{Type: "execution_start", Data: map[string]any{"prompt_id": "q"}}) // no client, no broadcast: nobody
	ts.Publish(Event{Type: "status", Data: map[string]any{"status": map[string]any{}}, Broadcast: true})
	jpeg := []byte{0xff, 0xd8, 0xff, 0xd9}
	meta := map[string]any{"node_id": "3", "prompt_id": "p", "display_node_id": "3", "parent_node_id": nil, "real_node_id": "3"}
	ts.Publish(Event{Preview: &Preview{Format: "JPEG", Data: jpeg, Metadata: meta}, Broadcast: true})

	if m := readWS(t, a); m.typ != "executing" || m.data["node"] != "3" {
		t.Fatalf("a: %s", m.raw)
	}
	if m := readWS(t, a); m.typ != "status" {
		t.Fatalf("a: want the broadcast status next (execution_start had no target), got %s", m.raw)
	}
	m := readWS(t, a)
	if !m.binary || binary.BigEndian.Uint32(m.raw[0:4]) != 1 || binary.BigEndian.Uint32(m.raw[4:8]) != 1 || string(m.raw[8:]) != string(jpeg) {
		t.Fatalf("a: want a type-1 JPEG preview frame, got % x", m.raw)
	}

	if m := readWS(t, b); m.typ != "status" {
		t.Fatalf("b: targeted event leaked or broadcast missing: %s", m.raw)
	}
	m = readWS(t, b)
	if !m.binary || binary.BigEndian.Uint32(m.raw[0:4]) != 4 {
		t.Fatalf("b: want a type-4 frame, got % x", m.raw)
	}
	n := binary.BigEndian.Uint32(m.raw[4:8])
	var gotMeta map[string]any
	if err := json.Unmarshal(m.raw[8:8+n], &gotMeta); err != nil {
		t.Fatal(err)
	}
	if gotMeta["image_type"] != "image/jpeg" || gotMeta["node_id"] != "3" || gotMeta["prompt_id"] != "p" {
		t.Fatalf("metadata %v", gotMeta)
	}
	if string(m.raw[8+n:]) != string(jpeg) {
		t.Fatal("image bytes after the metadata differ")
	}

	// A reconnecting client that runs the current prompt learns the executing node.
	a.Close()
	a2 := dialWS(t, hs.URL, "a")
	readWS(t, a2)
	if m := readWS(t, a2); m.typ != "executing" || m.data["node"] != "3" {
		t.Fatalf("reconnect: %s", m.raw)
	}
}

func TestPreviewFrameLayouts(t *testing.T) {
	png := []byte("\x89PNG....")
	f := encodePreview(&Preview{Format: "PNG", Data: png})
	if len(f) != 8+len(png) || binary.BigEndian.Uint32(f) != 1 || binary.BigEndian.Uint32(f[4:]) != 2 {
		t.Fatalf("type-1 PNG frame % x", f)
	}
	f = encodePreviewWithMetadata(&Preview{Format: "PNG", Data: png, Metadata: map[string]any{"node_id": "1"}})
	n := binary.BigEndian.Uint32(f[4:])
	if binary.BigEndian.Uint32(f) != 4 || !strings.Contains(string(f[8:8+n]), `"image_type":"image/png"`) || string(f[8+n:]) != string(png) {
		t.Fatalf("type-4 PNG frame %q", f)
	}
}
