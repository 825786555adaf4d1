package server

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"testing"
)

func TestFraming(t *testing.T) {
	for _, tc := range []struct {
		name     string
		stream   string
		requests int
		smuggled bool
	}{
		{"two gets", "GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n", 2, false},
		{"content-length body holding a fake header",
			"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 64\r\n\r\n" +
				"\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: x\r\n\r\n" +
				"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 2, false},
		{"chunked body with extensions and trailer",
			"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nabcd\r\n0\r\nX-T: 1\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", 2, false},
		{"both headers", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /s HTTP/1.1\r\nHost: x\r\n\r\n", 2, true},
		{"both headers, other case and spacing", "POST / HTTP/1.1\r\nhost: x\r\ncontent-length:4\r\nTRANSFER-ENCODING : chunked\r\n\r\n", 1, true},
		{"second request smuggles", "GET / HTTP/1.1\r\nHost: x\r\n\r\nPOST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n", 2, true},
		{"bare line feeds", "GET / HTTP/1.1\nHost: x\n\nPOST / HTTP/1.1\nContent-Length: 2\n\nokGET / HTTP/1.1\n\n", 3, false},
		{"websocket upgrade stops following", "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n\x81\x05Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Byte by byte and all at once give the same answer.
			for _, step := range []int{1, 7, len(tc.stream)} {
				f := newFraming()
				for i := 0; i < len(tc.stream); i += step {
					f.feed([]byte(tc.stream[i:min(i+step, len(tc.stream))]))
				}
				if f.requests != tc.requests || f.smuggled != tc.smuggled {
					t.Errorf("step %d: %d requests, smuggled %v; want %d, %v", step, f.requests, f.smuggled, tc.requests, tc.smuggled)
				}
			}
		})
	}
}

// FuzzFraming checks the tracker against net/http's own parser: for a stream that
// net/http reads as n whole requests (bodies included) and nothing more, the tracker
// ends n header blocks and waits for the next one; for any stream it never panics.
func FuzzFraming(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /prompt HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\na;x=y\r\n0123456789\r\n0\r\nT: v\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fr := newFraming()
		fr.feed(data)
		br := bufio.NewReader(bytes.NewReader(data))
		n := 0
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				if err != io.EOF {
					return // net/http refuses the stream: it closes the connection
				}
				break
			}
			// net/http's server answers any major version but 1 with 505 and closes
			// the connection, so the tracker need not follow past it.
			if req.Method == "CONNECT" || req.Header.Get("Upgrade") != "" || req.ProtoMajor != 1 {
				return
			}
			if _, err := io.Copy(io.Discard, req.Body); err != nil {
				return
			}
			n++
		}
		if n == 0 {
			return
		}
		if fr.state == frameDone {
			t.Fatalf("the tracker stopped following a stream net/http reads as %d requests: %q", n, data)
		}
		if fr.requests != n || fr.state != frameHeader || len(fr.line) != 0 {
			t.Fatalf("net/http reads %d requests, the tracker %d (state %d, %d bytes of a line): %q", n, fr.requests, fr.state, len(fr.line), data)
		}
	})
}
