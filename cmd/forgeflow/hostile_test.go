package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// syncBuffer is serve's stderr (its log), safe to read while serve writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startServeLogged is startServe with the log kept: it returns the address, the log
// and a stop function.
func startServeLogged(t *testing.T, args ...string) (string, *syncBuffer, func() int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan string, 1)
	done := make(chan int, 1)
	logs := &syncBuffer{}
	go func() {
		done <- serve(ctx, append(args, "--port", "0"), io.Discard, logs, func(a string) { addrc <- a })
	}()
	select {
	case addr := <-addrc:
		var once sync.Once
		code := -1
		stop := func() int {
			once.Do(func() {
				cancel()
				select {
				case code = <-done:
				case <-time.After(20 * time.Second):
					t.Error("serve did not shut down")
				}
			})
			return code
		}
		t.Cleanup(func() { stop() })
		return addr, logs, stop
	case code := <-done:
		cancel()
		t.Fatalf("serve exited %d: %s", code, logs)
	case <-time.After(20 * time.Second):
		cancel()
		t.Fatal("serve did not start")
	}
	return "", nil, nil
}

// bombPNG is a PNG header declaring w×h pixels and nothing else: 33 bytes.
func bombPNG(w, h uint32) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr, w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 6
	binary.Write(&b, binary.BigEndian, uint32(13))
	b.WriteString("IHDR")
	b.Write(ihdr)
	binary.Write(&b, binary.BigEndian, crc32.ChecksumIEEE(append([]byte("IHDR"), ihdr...)))
	return b.Bytes()
}

// chainPrompt is EmptyImage → n-2 ImageInvert → PreviewImage: n nodes, each waiting
// for the one before.
func chainPrompt(n int) string {
	var b strings.Builder
	b.WriteString(`{"0": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}`)
	for i := 1; i < n-1; i++ {
		fmt.Fprintf(&b, `, "%d": {"class_type": "ImageInvert", "inputs": {"image": ["%d", 0]}}`, i, i-1)
	}
	fmt.Fprintf(&b, `, "%d": {"class_type": "PreviewImage", "inputs": {"images": ["%d", 0]}}}`, n-1, n-2)
	return b.String()
}

// TestServeHostileRequests sends what an attacker (or a confused client) sends to a
// real forgeflow serve, as a table of raw requests and the answer each must get.
func TestServeHostileRequests(t *testing.T) {
	base := t.TempDir()
	os.MkdirAll(filepath.Join(base, "output"), 0o755)
	os.WriteFile(filepath.Join(base, "output", "bomb.png"), bombPNG(16000, 16000), 0o644)
	os.MkdirAll(filepath.Join(base, "user", "default"), 0o755)
	os.WriteFile(filepath.Join(base, "user", "default", "x.html"), []byte("<script>alert(1)</script>"), 0o644)
	addr, logs, _ := startServeLogged(t, "--base-directory", base)
	host := "Host: " + addr + "\r\n"
	prompt := func(extra string) string {
		body := `{"prompt": ` + goodPrompt + extra + `}`
		return fmt.Sprintf("POST /prompt HTTP/1.1\r\n%sContent-Type: application/json\r\nContent-Length: %d\r\n", host, len(body)) + "%s\r\n" + body
	}
	cycle := func(n int) string {
		var b strings.Builder
		b.WriteString(`{"prompt": {`)
		for i := 0; i < n; i++ {
			fmt.Fprintf(&b, `"%d": {"class_type": "ImageInvert", "inputs": {"image": ["%d", 0]}}, `, i, (i+n-1)%n)
		}
		fmt.Fprintf(&b, `"s": {"class_type": "PreviewImage", "inputs": {"images": ["%d", 0]}}}}`, n-1)
		return fmt.Sprintf("POST /prompt HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n%s", host, b.Len(), b.String())
	}
	for _, tc := range []struct {
		name, req string
		status    string // the status line's start
		closed    bool   // the connection must be closed after the answer
		maxBody   int
	}{
		{"Content-Length with Transfer-Encoding, pipelined request behind",
			"POST /prompt HTTP/1.1\r\n" + host + "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /queue HTTP/1.1\r\n" + host + "\r\n",
			"HTTP/1.1 400", true, 1 << 10},
		{"100 KB prompt_id", fmt.Sprintf(prompt(`, "prompt_id": "`+strings.Repeat("x", 100<<10)+`"`), ""), "HTTP/1.1 400", false, 1 << 10},
		{"Origin: null", fmt.Sprintf(prompt(""), "Origin: null\r\n"), "HTTP/1.1 403", false, 1 << 10},
		{"Origin: file://", fmt.Sprintf(prompt(""), "Origin: file://\r\n"), "HTTP/1.1 403", false, 1 << 10},
		{"Sec-Fetch-Site: cross-site", fmt.Sprintf(prompt(""), "Sec-Fetch-Site: cross-site\r\n"), "HTTP/1.1 403", false, 1 << 10},
		{"same-origin browser request", fmt.Sprintf(prompt(""), "Origin: http://"+addr+"\r\nSec-Fetch-Site: same-origin\r\n"), "HTTP/1.1 200", false, 1 << 10},
		{"DNS rebinding", "GET /queue HTTP/1.1\r\nHost: evil.example:8188\r\n\r\n", "HTTP/1.1 403", false, 1 << 10},
		{"websocket from Origin: null", "GET /ws HTTP/1.1\r\n" + host + "Origin: null\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", "HTTP/1.1 403", false, 1 << 10},
		{"decompression bomb preview", "GET /view?filename=bomb.png&preview=webp;90 HTTP/1.1\r\n" + host + "\r\n", "HTTP/1.1 413", false, 1 << 10},
		{"10,000-node cycle", cycle(9999), "HTTP/1.1 400", false, 8 << 10},
		{"10,001 nodes", cycle(10000), "HTTP/1.1 400", false, 1 << 10},
		{"stored HTML", "GET /userdata/x.html HTTP/1.1\r\n" + host + "\r\n", "HTTP/1.1 200", false, 1 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			go io.WriteString(c, tc.req)
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			line := fmt.Sprintf("HTTP/1.1 %d", resp.StatusCode)
			if !strings.HasPrefix(line, tc.status) || len(body) > tc.maxBody {
				t.Fatalf("%s (%d bytes): %.300s", line, len(body), body)
			}
			if tc.closed {
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if rest, err := io.ReadAll(br); err != nil || len(rest) > 0 {
					t.Fatalf("the connection stayed open (%v) or served more: %q", err, rest)
				}
			}
			if tc.name == "stored HTML" && (resp.Header.Get("Content-Type") != "application/octet-stream" || resp.Header.Get("X-Content-Type-Options") != "nosniff") {
				t.Errorf("headers %v", resp.Header)
			}
			t.Logf("%s, %d bytes", line, len(body))
		})
	}
	// A flood of invalid websocket messages: the client is cut off at the rate limit
	// and the log holds a few lines, not one per message.
	u := "ws://" + addr + "/ws?clientId=flood"
	c, _, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		t.Fatal(err)
	}
	sent := 0
	for ; sent < 100000; sent++ {
		if c.WriteMessage(websocket.TextMessage, []byte("{not json")) != nil {
			break
		}
	}
	c.Close()
	time.Sleep(200 * time.Millisecond)
	if n := strings.Count(logs.String(), "\n"); n > 60 {
		t.Errorf("the server logged %d lines:\n%s", n, logs)
	}
	t.Logf("%d invalid websocket messages sent before the server cut the client off; %d log lines in all", sent, strings.Count(logs.String(), "\n"))
}

// TestServeLongChain runs a 10,000-node chain through a real serve: it finishes, and
// its websocket client gets the end of it.
func TestServeLongChain(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 node runs")
	}
	addr, _, _ := startServeLogged(t, "--base-directory", t.TempDir())
	c, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws?clientId=chain", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	resp, err := http.Post("http://"+addr+"/prompt", "application/json", strings.NewReader(`{"client_id": "chain", "prompt": `+chainPrompt(10000)+`}`))
	if err != nil {
		t.Fatal(err)
	}
	var ans struct {
		PromptID string `json:"prompt_id"`
	}
	json.NewDecoder(resp.Body).Decode(&ans)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST /prompt: %d", resp.StatusCode)
	}
	var states, stateBytes int
	c.SetReadDeadline(time.Now().Add(5 * time.Minute))
	for {
		_, data, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("after %v: %v", time.Since(start), err)
		}
		var m struct {
			Type string `json:"type"`
			Data struct {
				Node     any    `json:"node"`
				PromptID string `json:"prompt_id"`
			} `json:"data"`
		}
		json.Unmarshal(data, &m)
		if m.Type == "progress_state" {
			states++
			stateBytes += len(data)
		}
		if m.Type == "execution_error" {
			t.Fatalf("%s", data)
		}
		if m.Type == "executing" && m.Data.Node == nil && m.Data.PromptID == ans.PromptID {
			break
		}
	}
	t.Logf("10,000-node chain: %v, %d progress_state messages (%d KB)", time.Since(start).Round(time.Millisecond), states, stateBytes>>10)
	h, err := http.Get("http://" + addr + "/history/" + url.PathEscape(ans.PromptID))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Body.Close()
	if b, _ := io.ReadAll(h.Body); !bytes.Contains(b, []byte(`"status_str":"success"`)) {
		t.Fatalf("history %.300s", b)
	}
}

// TestServeDamagedQueue: serve starts on a damaged queue file (repairing it, the
// damaged copy named in the log) and refuses a file that is not a queue database,
// naming it and the way out.
func TestServeDamagedQueue(t *testing.T) {
	base := t.TempDir()
	addr, _, stop := startServeLogged(t, "--base-directory", base)
	for i := 0; i < 3; i++ {
		resp, err := http.Post("http://"+addr+"/prompt", "application/json", strings.NewReader(`{"prompt": `+goodPrompt+`}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	time.Sleep(500 * time.Millisecond)
	if code := stop(); code != exitOK {
		t.Fatalf("exit %d", code)
	}
	// Garbage over every page but the two meta pages.
	db := filepath.Join(base, "user", "forgeflow.db")
	data, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	for i := 8192; i < len(data); i++ {
		data[i] = byte(i * 7)
	}
	os.WriteFile(db, data, 0o600)
	addr, logs, _ := startServeLogged(t, "--base-directory", base)
	if !strings.Contains(logs.String(), "queue database was damaged") || !strings.Contains(logs.String(), db+".damaged-") {
		t.Fatalf("log:\n%s", logs)
	}
	resp, err := http.Get("http://" + addr + "/history")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("history after the repair: %v %v", resp, err)
	}
	resp.Body.Close()

	other := filepath.Join(t.TempDir(), "notes.txt")
	os.WriteFile(other, []byte(strings.Repeat("not a database\n", 1000)), 0o644)
	var errb bytes.Buffer
	code := serve(context.Background(), []string{"--base-directory", t.TempDir(), "--queue-db", other, "--port", "0"}, io.Discard, &errb, nil)
	if code == exitOK || !strings.Contains(errb.String(), other) || !strings.Contains(errb.String(), "--queue-db") {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
}
