package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"image/color"
	"io"
	"log/slog"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// serveReal serves ts on a loopback port through Listen and NewHTTPServer, as
// forgeflow serve does, and returns the address.
func serveReal(t *testing.T, ts *testServer) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := ts.NewHTTPServer()
	go hs.Serve(ts.Listen(ln))
	t.Cleanup(func() { hs.Close() })
	return ln.Addr().String()
}

// rawResponses writes raw to a new connection and returns everything the server
// answers until it closes the connection (or 3 s pass).
func rawResponses(t *testing.T, addr, raw string) (string, bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	got, err := io.ReadAll(c)
	closed := err == nil // EOF: the server closed the connection
	return string(got), closed
}

// TestSmuggledRequestRefused: a request with both Content-Length and
// Transfer-Encoding is answered 400 and its connection closed, so the request
// pipelined behind it is never served (net/http alone serves both).
func TestSmuggledRequestRefused(t *testing.T) {
	ts := newTestServer(t, nil)
	addr := serveReal(t, ts)
	got, closed := rawResponses(t, addr, "POST /prompt HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"+
		"0\r\n\r\nGET /queue HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	if !strings.HasPrefix(got, "HTTP/1.1 400 ") || strings.Count(got, "HTTP/1.1 ") != 1 || !closed {
		t.Fatalf("closed %v, answer:\n%s", closed, got)
	}
	if !strings.Contains(got, "Transfer-Encoding") {
		t.Errorf("the refusal does not say why:\n%s", got)
	}
	// HTTP/1.0 with Transfer-Encoding is faulty framing too.
	got, closed = rawResponses(t, addr, "POST /prompt HTTP/1.0\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n{}")
	if !strings.HasPrefix(got, "HTTP/1.0 400 ") || !closed {
		t.Fatalf("HTTP/1.0 with Transfer-Encoding: closed %v, answer:\n%s", closed, got)
	}
	// Well-framed pipelined requests on one connection are all served.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "POST /interrupt HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"+
		"POST /interrupt HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}GET /prompt HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	br := bufio.NewReader(c)
	for i := 0; i < 3; i++ {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("pipelined request %d: %v %v", i, resp, err)
		}
		io.Copy(io.Discard, resp.Body)
	}
}

// TestConnectionCap: at MaxConnections the connection idle the longest is closed to
// make room; with every connection busy a new one gets 503 at once.
func TestConnectionCap(t *testing.T) {
	const max = 5
	ts := newTestServer(t, func(o *Options) { o.MaxConnections = max; o.ReadBodyTimeout = 5 * time.Second })
	addr := serveReal(t, ts)
	var idle []net.Conn
	for i := 0; i < 3*max; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		idle = append(idle, c)
	}
	time.Sleep(100 * time.Millisecond)
	// Fifteen idle connections over a cap of five: a request still gets through.
	resp, err := http.Get("http://" + addr + "/prompt")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("request past idle connections: %v %v", resp, err)
	}
	resp.Body.Close()
	closedIdle := 0
	for _, c := range idle {
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); err == io.EOF {
			closedIdle++
		}
	}
	if closedIdle < 2*max {
		t.Errorf("%d idle connections closed, want at least %d", closedIdle, 2*max)
	}
	// Five connections busy sending a body: the sixth is refused with 503.
	for i := 0; i < max; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "POST /prompt HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{")
	}
	time.Sleep(200 * time.Millisecond)
	got, _ := rawResponses(t, addr, "GET /prompt HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	if !strings.HasPrefix(got, "HTTP/1.1 503 ") {
		t.Fatalf("with every connection busy: %q", got)
	}
}

// TestTimeouts: a body that stalls is cut off after ReadBodyTimeout; an idle
// keep-alive connection is closed after IdleTimeout; a header that never ends after
// ReadHeaderTimeout.
func TestTimeouts(t *testing.T) {
	ts := newTestServer(t, func(o *Options) {
		o.ReadBodyTimeout, o.IdleTimeout, o.ReadHeaderTimeout = 300*time.Millisecond, 300*time.Millisecond, 300*time.Millisecond
	})
	addr := serveReal(t, ts)
	for _, tc := range []struct{ name, raw, want string }{
		{"stalled body", "POST /prompt HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{\"pro", "HTTP/1.1 400 "},
		{"idle keep-alive", "GET /prompt HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", "HTTP/1.1 200 "},
		{"header never ends", "GET /prompt HTTP/1.1\r\nHost: 127.0.0.1\r\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			got, closed := rawResponses(t, addr, tc.raw)
			if !closed || !strings.HasPrefix(got, tc.want) || time.Since(start) > 2500*time.Millisecond {
				t.Fatalf("after %v closed %v: %q", time.Since(start), closed, got)
			}
		})
	}
}

// TestPromptLimits: ids over MaxIDLength and prompts over MaxPromptNodes are refused
// with 400 (a 100 KB prompt_id once reached the store and gave 500 "key too large").
func TestPromptLimits(t *testing.T) {
	ts := newTestServer(t, func(o *Options) { o.MaxPromptNodes = 3 })
	long := strings.Repeat("x", 100<<10)
	for _, tc := range []struct{ name, body, want string }{
		{"100 KB prompt_id", `{"prompt_id": "` + long + `", "prompt": ` + sinkPrompt + `}`, "invalid_prompt_id"},
		{"100 KB client_id", `{"client_id": "` + long + `", "prompt": ` + sinkPrompt + `}`, "at most 256 bytes"},
		{"too many nodes", `{"prompt": {"1": {"class_type": "Sink", "inputs": {}}, "2": {"class_type": "Sink", "inputs": {}},
			"3": {"class_type": "Sink", "inputs": {}}, "4": {"class_type": "Sink", "inputs": {}}}}`, "at most 3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := ts.do(t, "POST", "/prompt", strings.NewReader(tc.body))
			if rec.Code != 400 || !strings.Contains(rec.Body.String(), tc.want) || rec.Body.Len() > 4096 {
				t.Fatalf("status %d, %d bytes: %.300s", rec.Code, rec.Body.Len(), rec.Body)
			}
		})
	}
	if n := len(ts.pending(t)); n != 0 {
		t.Errorf("%d refused prompts were queued", n)
	}
	// A client_id of exactly MaxIDLength bytes is fine (a prompt_id must be a UUID).
	rec := ts.do(t, "POST", "/prompt", strings.NewReader(`{"client_id": "`+strings.Repeat("y", 256)+`", "prompt": `+sinkPrompt+`}`))
	if rec.Code != 200 {
		t.Fatalf("256-byte client_id: %d %s", rec.Code, rec.Body)
	}
	// clientId of the websocket too.
	hs := httptest.NewServer(ts)
	defer hs.Close()
	_, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(hs.URL, "http")+"/ws?clientId="+long[:1000], nil)
	if err == nil || resp == nil || resp.StatusCode != 400 {
		t.Fatalf("1000-byte clientId: %v %v", resp, err)
	}
}

// countingHandler counts log records by message.
type countingHandler struct {
	mu sync.Mutex
	n  map[string]int
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.n[r.Message]++
	h.mu.Unlock()
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }
func (h *countingHandler) count(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n[msg]
}

// TestWebsocketLimits: 100,000 invalid messages write a handful of log lines; a client
// over the message rate or size is disconnected.
func TestWebsocketLimits(t *testing.T) {
	logs := &countingHandler{n: map[string]int{}}
	ts := newTestServer(t, func(o *Options) {
		o.Logger = slog.New(logs)
		o.MaxWSMessageRate = 1e9 // the log limit alone
		o.MaxWSMessageSize = 1 << 10
	})
	hs := httptest.NewServer(ts)
	defer hs.Close()
	c := dialWS(t, hs.URL, "flood")
	readWS(t, c)
	start := time.Now()
	const n = 100000
	for i := 0; i < n; i++ {
		if err := c.WriteMessage(websocket.TextMessage, []byte("not json")); err != nil {
			t.Fatal(err)
		}
	}
	// A ping round trip shows the server has read everything.
	c.WriteMessage(websocket.TextMessage, []byte(`{"type": "feature_flags", "data": {}}`))
	c.WriteMessage(websocket.TextMessage, []byte(`{"type": "x"}`))
	elapsed := time.Since(start)
	time.Sleep(100 * time.Millisecond)
	lines := logs.count("invalid json from websocket client")
	if limit := clientLogBurst + int(elapsed.Seconds()*clientLogRate) + 2; lines > limit || lines == 0 {
		t.Errorf("%d invalid messages in %v wrote %d log lines, want 1..%d", n, elapsed, lines, limit)
	}
	t.Logf("%d invalid messages in %v: %d log lines", n, elapsed.Round(time.Millisecond), lines)
	// Over the size limit: disconnected.
	c.WriteMessage(websocket.TextMessage, bytes.Repeat([]byte("x"), 2<<10))
	if !disconnected(c) {
		t.Error("a message over MaxWSMessageSize did not disconnect the client")
	}

	ts = newTestServer(t, func(o *Options) { o.MaxWSMessageRate = 50 })
	hs2 := httptest.NewServer(ts)
	defer hs2.Close()
	c = dialWS(t, hs2.URL, "fast")
	readWS(t, c)
	for i := 0; i < 1000; i++ {
		if c.WriteMessage(websocket.TextMessage, []byte(`{"type": "x"}`)) != nil {
			break
		}
	}
	if !disconnected(c) {
		t.Error("1000 messages at once over a rate of 50/s did not disconnect the client")
	}
}

// disconnected reads until the server closes c (true) or 5 s pass (false).
func disconnected(c *websocket.Conn) bool {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, _, err := c.ReadMessage(); err != nil {
			var ne net.Error
			return !(errors.As(err, &ne) && ne.Timeout())
		}
	}
}

// TestLogLimiter: a burst passes, then one line per 1/rate, the next one after a pause
// carrying how many were suppressed.
func TestLogLimiter(t *testing.T) {
	now := time.Unix(0, 0)
	l := newLogLimiter(2, 3)
	l.now = func() time.Time { return now }
	passed := 0
	for i := 0; i < 100; i++ {
		if ok, _ := l.allow("k"); ok {
			passed++
		}
	}
	if passed != 3 {
		t.Fatalf("%d of a burst of 100 passed, want 3", passed)
	}
	now = now.Add(500 * time.Millisecond)
	if ok, n := l.allow("k"); !ok || n != 97 {
		t.Fatalf("after 0.5 s at 2/s: %v, %d suppressed; want true, 97", ok, n)
	}
	if ok, _ := l.allow("other"); !ok {
		t.Fatal("another kind is limited by the first one's bucket")
	}
	for i := 0; i < 2*maxLogKinds; i++ {
		l.allow(fmt.Sprint("kind", i))
	}
	if len(l.kinds) > maxLogKinds+1 {
		t.Errorf("%d kinds kept", len(l.kinds))
	}
}

// streamUpload is a multipart upload of a PNG header followed by size bytes of filler,
// generated as it is read (the test itself holds no copy of it).
func streamUpload(size int64) (io.Reader, string) {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		fw, _ := mw.CreateFormFile("image", "big.png")
		fw.Write(pngHeader(64, 64))
		buf := make([]byte, 64<<10)
		for left := size; left > 0; left -= int64(len(buf)) {
			if _, err := fw.Write(buf[:min(int64(len(buf)), left)]); err != nil {
				pw.CloseWithError(err)
				return
			}
		}
		mw.Close()
		pw.Close()
	}()
	return pr, mw.FormDataContentType()
}

// pngHeader is a PNG signature and IHDR for w×h RGBA.
func pngHeader(w, h uint32) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr, w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 6
	binary.Write(&b, binary.BigEndian, uint32(len(ihdr)))
	b.WriteString("IHDR")
	b.Write(ihdr)
	crc := crc32.NewIEEE()
	crc.Write([]byte("IHDR"))
	crc.Write(ihdr)
	binary.Write(&b, binary.BigEndian, crc.Sum32())
	return b.Bytes()
}

// TestUploadStreamsToDisk: a 64 MB upload allocates a small fraction of its size (it
// was read whole into memory, and compared by reading the existing file whole); the
// spool file is gone afterwards.
func TestUploadStreamsToDisk(t *testing.T) {
	ts := newTestServer(t, nil)
	const size = 64 << 20
	upload := func() (int, uint64) {
		body, ct := streamUpload(size)
		req := httptest.NewRequest("POST", "/upload/image", body)
		req.Header.Set("Content-Type", ct)
		rec := httptest.NewRecorder()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		ts.ServeHTTP(rec, req)
		runtime.ReadMemStats(&after)
		if rec.Code != 200 {
			t.Fatalf("upload: %d %s", rec.Code, rec.Body)
		}
		return rec.Code, after.TotalAlloc - before.TotalAlloc
	}
	_, first := upload()
	_, again := upload() // the same bytes: compared with the stored file, reused
	for _, alloc := range []uint64{first, again} {
		if alloc > size/8 {
			t.Errorf("a %d MB upload allocated %d MB", size>>20, alloc>>20)
		}
	}
	st, err := os.Stat(filepath.Join(ts.dirs.Input, "big.png"))
	if err != nil || st.Size() < size {
		t.Fatalf("stored upload: %v %v", st, err)
	}
	if _, err := os.Stat(filepath.Join(ts.dirs.Input, "big (1).png")); err == nil {
		t.Error("the same upload again was stored under a new name")
	}
	left, _ := filepath.Glob(filepath.Join(ts.dirs.Temp, ".upload-*"))
	parts, _ := filepath.Glob(filepath.Join(ts.dirs.Input, ".*"))
	if len(left)+len(parts) > 0 {
		t.Errorf("spool files left: %v %v", left, parts)
	}
	t.Logf("64 MB upload: %d KB allocated, %d KB the second time", first>>10, again>>10)
}

// TestUploadSlots: uploads beyond MaxConcurrentUploads wait for a slot and are
// refused with 503 when none frees up in time.
func TestUploadSlots(t *testing.T) {
	ts := newTestServer(t, func(o *Options) { o.MaxConcurrentUploads = 1 })
	ts.uploadWait = 200 * time.Millisecond
	addr := serveReal(t, ts)
	// The first upload sends its header and part of its body, then stalls.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "POST /upload/image HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 1000\r\n\r\n--b\r\n")
	time.Sleep(200 * time.Millisecond)
	body, ct := multipartBody(t, "x.png", pngBytes(t, 1, 1, func(int, int) color.NRGBA { return color.NRGBA{A: 255} }), nil)
	resp, err := http.Post("http://"+addr+"/upload/image", ct, body)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e map[string]any
	json.NewDecoder(resp.Body).Decode(&e)
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("second upload with one slot taken: %d %v", resp.StatusCode, e)
	}
	c.Close() // the slot frees: the next upload goes through
	time.Sleep(100 * time.Millisecond)
	body, ct = multipartBody(t, "x.png", pngBytes(t, 1, 1, func(int, int) color.NRGBA { return color.NRGBA{A: 255} }), nil)
	resp2, err := http.Post("http://"+addr+"/upload/image", ct, body)
	if err != nil || resp2.StatusCode != 200 {
		t.Fatalf("upload after the slot freed: %v %v", resp2, err)
	}
	resp2.Body.Close()
}

// TestStatusBurstKeepsSlowClient: a burst of queue statuses (each queued prompt
// broadcasts one) to a client whose socket is full does not fill its backlog: a status
// replaces the one not yet written, which keeps its place among the other messages.
func TestStatusBurstKeepsSlowClient(t *testing.T) {
	ts := newTestServer(t, nil)
	hs := httptest.NewServer(ts)
	defer hs.Close()
	c := dialWS(t, hs.URL, "slow")
	readWS(t, c)
	// Previews the client does not read fill its socket: the writer blocks.
	for i := 0; i < 8; i++ {
		ts.Publish(Event{ClientID: "slow", Preview: &Preview{Format: "PNG", Data: make([]byte, 2<<20)}})
	}
	time.Sleep(100 * time.Millisecond)
	const n = 2 * sendBacklog
	for i := 1; i <= n; i++ {
		ts.Publish(Event{Type: "status", Broadcast: true, Data: map[string]any{"status": map[string]any{"exec_info": map[string]any{"queue_remaining": i}}}})
	}
	ts.Publish(Event{Type: "executing", ClientID: "slow", Data: map[string]any{"node": nil, "prompt_id": "p"}})
	var got []string
	for {
		m := readWS(t, c)
		if m.binary {
			continue
		}
		if m.typ == "status" {
			got = append(got, fmt.Sprint(m.data["status"].(map[string]any)["exec_info"].(map[string]any)["queue_remaining"]))
			continue
		}
		if m.typ != "executing" {
			t.Fatalf("message %s", m.raw)
		}
		break
	}
	// The first status may have been written before the socket filled; the last one
	// written holds the latest count, and comes before the executing sent after it.
	if len(got) > 2 || got[len(got)-1] != fmt.Sprint(n) {
		t.Errorf("statuses %v for a burst of %d", got, n)
	}
}
