package server

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/forgeflow/forgeflow/executor"
)

// Binary websocket event types (ComfyUI protocol.py BinaryEventTypes).
const (
	binaryPreviewImage             = 1
	binaryPreviewImageWithMetadata = 4
)

// Image type numbers of a type-1 preview frame (server.py send_image).
const (
	previewJPEG = 1
	previewPNG  = 2
)

// Event is one message for websocket clients. The executor's events are published
// through Server.Publish with ComfyUI's type names and data shapes (status,
// execution_start, execution_cached, executing, progress, progress_state, executed,
// execution_success, execution_error, execution_interrupted).
type Event struct {
	Type string
	Data any
	// ClientID targets one client (the prompt's client_id). Without one, Broadcast
	// sends to every client and no Broadcast sends to nobody (ComfyUI sends the
	// execution_* events of a prompt without client_id to no one).
	ClientID  string
	Broadcast bool
	// Preview, when set, makes the event a binary preview frame; Type and Data are
	// ignored.
	Preview *Preview
}

// Preview is an encoded preview image. Clients that announced
// supports_preview_metadata get it as a type-4 frame with Metadata; the others get
// the type-1 frame.
type Preview struct {
	Format string // "JPEG" or "PNG"
	Data   []byte
	// Metadata is node_id, prompt_id, display_node_id, parent_node_id, real_node_id;
	// image_type is added here.
	Metadata map[string]any
}

// writeWait bounds a write to one client: a client that stops reading is dropped
// rather than holding up everyone else. sendBacklog and sendBacklogBytes bound what
// waits for one client: a prompt of 10,000 nodes sends 10,000 "executing" messages in
// a second or two, and a progress_state of a large prompt or a preview can be
// megabytes; a client over either is dropped too (a broadcast message is one copy
// shared by every client, so the bytes count per client but not per copy).
const (
	writeWait        = 10 * time.Second
	sendBacklog      = 16384
	sendBacklogBytes = 64 << 20
)

type wsMessage struct {
	binary bool
	data   []byte
	// status, when set, holds the message instead of data: a queue status whose
	// content a newer status replaces until it is written.
	status *statusSlot
}

type statusSlot struct{ data []byte }

type wsClient struct {
	sid  string
	conn *websocket.Conn
	send chan wsMessage
	done chan struct{}
	once sync.Once
	// usageSource is the handshake's Comfy-Usage-Source header, given to the
	// prompts this client sends over the socket.
	usageSource string

	mu      sync.Mutex
	flags   map[string]any
	pending int // bytes in send

	// status is the queued status message not yet written: a status supersedes the
	// one before, so a burst of queued prompts (each broadcasting one) costs each
	// client one slot, not one per prompt, and the status keeps its place among the
	// other messages.
	status *statusSlot

	// errorBudget bounds the error messages answering bad client messages; only the
	// reading goroutine uses it.
	errorBudget *rateLimit
}

// enqueueStatus hands a status message to the writer, or puts its content in the
// status message still waiting to be written.
func (c *wsClient) enqueueStatus(msg []byte) {
	c.mu.Lock()
	if c.status != nil {
		c.status.data = msg
		c.mu.Unlock()
		return
	}
	slot := &statusSlot{data: msg}
	c.status = slot
	c.mu.Unlock()
	c.enqueue(wsMessage{status: slot, data: msg})
}

func (c *wsClient) close() {
	c.once.Do(func() {
		close(c.done)
		_ = c.conn.Close()
	})
}

func (c *wsClient) supports(flag string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, _ := c.flags[flag].(bool)
	return v
}

// enqueue hands a message to the client's writer; a client whose backlog is full is
// disconnected (it will reconnect and get a fresh status).
func (c *wsClient) enqueue(m wsMessage) {
	c.mu.Lock()
	over := c.pending+len(m.data) > sendBacklogBytes
	if !over {
		c.pending += len(m.data)
	}
	c.mu.Unlock()
	if over {
		c.close()
		return
	}
	select {
	case c.send <- m:
	case <-c.done:
	default:
		c.close()
	}
}

func (c *wsClient) writeLoop() {
	defer c.close()
	for {
		select {
		case <-c.done:
			return
		case m := <-c.send:
			c.mu.Lock()
			c.pending -= len(m.data)
			if m.status != nil {
				m.data = m.status.data
				if c.status == m.status {
					c.status = nil
				}
			}
			c.mu.Unlock()
			typ := websocket.TextMessage
			if m.binary {
				typ = websocket.BinaryMessage
			}
			_ = c.conn.SetWriteDeadline(time.Now().Add(writeWait))
			if err := c.conn.WriteMessage(typ, m.data); err != nil {
				return
			}
		}
	}
}

// hub tracks connected clients by sid and the client and node currently executing, so
// that a client reconnecting mid-prompt learns which node runs (server.py websocket_handler).
type hub struct {
	s        *Server
	mu       sync.Mutex
	clients  map[string]*wsClient
	execSID  string
	execNode any
}

func newHub(s *Server) *hub { return &hub{s: s, clients: map[string]*wsClient{}} }

func (h *hub) add(c *wsClient) {
	h.mu.Lock()
	old := h.clients[c.sid]
	h.clients[c.sid] = c
	h.mu.Unlock()
	if old != nil {
		old.close()
	}
}

func (h *hub) remove(c *wsClient) {
	h.mu.Lock()
	if h.clients[c.sid] == c {
		delete(h.clients, c.sid)
	}
	h.mu.Unlock()
	c.close()
}

func (h *hub) closeAll() {
	h.mu.Lock()
	cs := make([]*wsClient, 0, len(h.clients))
	for _, c := range h.clients {
		cs = append(cs, c)
	}
	h.clients = map[string]*wsClient{}
	h.mu.Unlock()
	for _, c := range cs {
		c.close()
	}
}

// targets returns the client with sid, every client for a broadcast, or none.
func (h *hub) targets(sid string, broadcast bool) []*wsClient {
	h.mu.Lock()
	defer h.mu.Unlock()
	if sid != "" {
		if c, ok := h.clients[sid]; ok {
			return []*wsClient{c}
		}
		return nil
	}
	if !broadcast {
		return nil
	}
	cs := make([]*wsClient, 0, len(h.clients))
	for _, c := range h.clients {
		cs = append(cs, c)
	}
	return cs
}

// rateLimit is a token bucket: rate tokens a second, at most burst of them.
type rateLimit struct {
	rate, burst, tokens float64
	last                time.Time
}

func newRateLimit(rate, burst float64) *rateLimit {
	return &rateLimit{rate: rate, burst: burst, tokens: burst}
}

// allow takes a token if there is one.
func (l *rateLimit) allow(now time.Time) bool {
	if !l.last.IsZero() {
		l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	}
	l.last = now
	if l.tokens < 1 {
		return false
	}
	l.tokens--
	return true
}

// jsonMessage encodes ComfyUI's {"type", "data"} envelope.
func jsonMessage(typ string, data any) ([]byte, error) {
	return json.Marshal(struct {
		Type string `json:"type"`
		Data any    `json:"data"`
	}{typ, data})
}

// Publish sends an event to its client, or to all clients. It never blocks on a slow
// client.
func (s *Server) Publish(ev Event) {
	if ev.Preview != nil {
		s.publishPreview(ev)
		return
	}
	targets := s.hub.targets(ev.ClientID, ev.Broadcast)
	if len(targets) == 0 && ev.Type != "executing" {
		return // nobody to encode it for (a progress_state can be megabytes)
	}
	data, err := json.Marshal(ev.Data)
	if err != nil {
		s.log.Error("encode websocket event", "type", ev.Type, "err", err)
		return
	}
	msg, err := jsonMessage(ev.Type, json.RawMessage(data))
	if err != nil {
		s.log.Error("encode websocket event", "type", ev.Type, "err", err)
		return
	}
	if ev.Type == "executing" {
		var d struct {
			Node any `json:"node"`
		}
		_ = json.Unmarshal(data, &d)
		s.hub.mu.Lock()
		s.hub.execSID, s.hub.execNode = ev.ClientID, d.Node
		s.hub.mu.Unlock()
	}
	for _, c := range targets {
		if ev.Type == "status" {
			c.enqueueStatus(msg)
			continue
		}
		c.enqueue(wsMessage{data: msg})
	}
}

func (s *Server) publishPreview(ev Event) {
	p := ev.Preview
	var legacy, withMeta []byte
	for _, c := range s.hub.targets(ev.ClientID, ev.Broadcast) {
		if c.supports("supports_preview_metadata") {
			if withMeta == nil {
				withMeta = encodePreviewWithMetadata(p)
			}
			c.enqueue(wsMessage{binary: true, data: withMeta})
			continue
		}
		if legacy == nil {
			legacy = encodePreview(p)
		}
		c.enqueue(wsMessage{binary: true, data: legacy})
	}
}

// encodePreview builds a type-1 frame: event type, image type (1 JPEG, 2 PNG), image
// bytes, the integers 4-byte big-endian (server.py send_image).
func encodePreview(p *Preview) []byte {
	imgType := uint32(previewJPEG)
	if p.Format == "PNG" {
		imgType = previewPNG
	}
	b := make([]byte, 8, 8+len(p.Data))
	binary.BigEndian.PutUint32(b[0:4], binaryPreviewImage)
	binary.BigEndian.PutUint32(b[4:8], imgType)
	return append(b, p.Data...)
}

// encodePreviewWithMetadata builds a type-4 frame: event type, metadata length, metadata
// JSON (with image_type set to the MIME type), image bytes (server.py
// send_image_with_metadata).
func encodePreviewWithMetadata(p *Preview) []byte {
	meta := map[string]any{}
	for k, v := range p.Metadata {
		meta[k] = v
	}
	meta["image_type"] = "image/jpeg"
	if p.Format == "PNG" {
		meta["image_type"] = "image/png"
	}
	mj, _ := json.Marshal(meta) // a map of plain values always encodes
	b := make([]byte, 8, 8+len(mj)+len(p.Data))
	binary.BigEndian.PutUint32(b[0:4], binaryPreviewImageWithMetadata)
	binary.BigEndian.PutUint32(b[4:8], uint32(len(mj)))
	b = append(b, mj...)
	return append(b, p.Data...)
}

// features is GET /features and the server's feature_flags message
// (comfy_api/feature_flags.py SERVER_FEATURE_FLAGS).
func (s *Server) features() map[string]any {
	return map[string]any{
		"supports_preview_metadata": true,
		"max_upload_size":           s.opts.MaxUploadSize,
		wsPromptFlag:                true,
	}
}

// queueInfo is the status payload {"exec_info": {"queue_remaining": n}}.
func (s *Server) queueInfo(ctx context.Context) map[string]any {
	n := 0
	if s.queue != nil {
		// A store error counts as an empty queue: the status is informative only.
		n, _ = s.queue.Remaining(ctx)
	}
	return map[string]any{"exec_info": map[string]any{"queue_remaining": n}}
}

// queueUpdated broadcasts the queue status, as ComfyUI's queue_updated does. The engine
// broadcasts it itself when a prompt is queued, started or finished; the server does
// when a request deletes from the queue.
func (s *Server) queueUpdated(ctx context.Context) {
	s.Publish(Event{Type: "status", Data: map[string]any{"status": s.queueInfo(ctx)}, Broadcast: true})
}

func (s *Server) websocketRoutes() {
	s.route("GET /ws", s.handleWS)
}

func newSID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (s *Server) handleWS(w http.ResponseWriter, r *http.Request) {
	up := websocket.Upgrader{
		// originMiddleware has already applied ComfyUI's origin rule (or CORS).
		CheckOrigin: func(*http.Request) bool { return true },
	}
	sid := r.URL.Query().Get("clientId")
	if len(sid) > executor.MaxIDLength {
		s.writeError(w, http.StatusBadRequest, "clientId too long", fmt.Sprintf("at most %d bytes", executor.MaxIDLength))
		return
	}
	conn, err := up.Upgrade(w, r, nil)
	if err != nil {
		return // Upgrade has written the error answer
	}
	if sid == "" {
		sid = newSID()
	}
	c := &wsClient{sid: sid, conn: conn, send: make(chan wsMessage, sendBacklog), done: make(chan struct{}), flags: map[string]any{},
		usageSource: r.Header.Get(usageSourceHeader), errorBudget: newRateLimit(errorReplyRate, errorReplyBurst)}
	s.hub.add(c)
	defer s.hub.remove(c)
	go c.writeLoop()

	if msg, err := jsonMessage("status", map[string]any{"status": s.queueInfo(r.Context()), "sid": sid}); err == nil {
		c.enqueue(wsMessage{data: msg})
	}
	s.hub.mu.Lock()
	execSID, execNode := s.hub.execSID, s.hub.execNode
	s.hub.mu.Unlock()
	if execSID == sid && execNode != nil {
		if msg, err := jsonMessage("executing", map[string]any{"node": execNode}); err == nil {
			c.enqueue(wsMessage{data: msg})
		}
	}

	// A client sending messages faster than MaxWSMessageRate (burst of twice that), or
	// a message over MaxWSMessageSize, is disconnected; a prompt message may be as big
	// as a POST /prompt body (MaxPromptSize and its envelope).
	readLimit := max(s.opts.MaxWSMessageSize, s.wsMessageLimit())
	conn.SetReadLimit(readLimit)
	rate := newRateLimit(s.opts.MaxWSMessageRate, 2*s.opts.MaxWSMessageRate)
	first := true
	for {
		typ, data, err := conn.ReadMessage()
		if err != nil {
			if errors.Is(err, websocket.ErrReadLimit) {
				s.log.Warn("websocket client sent a message over the size limit; disconnected", "sid", sid, "limit", readLimit)
			}
			return
		}
		if !rate.allow(time.Now()) {
			s.log.Warn("websocket client sent messages over the rate limit; disconnected", "sid", sid, "per_second", s.opts.MaxWSMessageRate)
			_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.ClosePolicyViolation, "message rate limit"), time.Now().Add(time.Second))
			return
		}
		if int64(len(data)) > s.opts.MaxWSMessageSize && (typ != websocket.TextMessage || !isPromptMessage(data)) {
			s.log.Warn("websocket client sent a message over the size limit; disconnected", "sid", sid, "limit", s.opts.MaxWSMessageSize)
			_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseMessageTooBig, "message too big"), time.Now().Add(time.Second))
			return
		}
		if typ != websocket.TextMessage {
			continue
		}
		first = s.clientMessage(r.Context(), c, data, first)
	}
}
