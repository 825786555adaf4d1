package server

import (
	"bytes"
	"strconv"
	"strings"
)

// framing follows the request framing of one HTTP/1.1 connection as net/http will
// parse it (header block, then a Content-Length body, a chunked body or none), byte
// by byte as the server reads them, to find what net/http hides: a header block that
// carries both Content-Length and Transfer-Encoding. net/http drops Content-Length,
// reads the body as chunked and keeps the connection open, so a request pipelined
// behind such a message is served; RFC 9112 §6.3 says to treat the message as an error
// and close the connection, and a proxy in front that framed it by Content-Length
// would see different requests (request smuggling).
//
// After a header block that asks for a protocol upgrade (websocket), or anything the
// tracker does not follow, it stops looking: net/http either answers 400 and closes,
// or the connection is no longer HTTP.
type framing struct {
	state     frameState
	line      []byte
	first     bool  // the next header line is the request line
	left      int64 // body or chunk bytes still to skip
	hasCL     bool
	hasTE     bool
	http10    bool // the request is older than HTTP/1.1: net/http ignores its Transfer-Encoding
	upgrade   bool
	cl        string
	lastName  string // the header the last line set, for folded continuation lines
	headerLen int

	// smuggled is set once a header block carried both Content-Length and
	// Transfer-Encoding.
	smuggled bool
	// requests counts the header blocks followed to their end.
	requests int
}

type frameState uint8

const (
	frameHeader frameState = iota
	frameBody
	frameChunkSize
	frameChunkData
	frameChunkEnd
	frameTrailer
	frameDone // not following any more
)

// Bounds of what the tracker keeps: a header line is read up to maxFrameLine bytes
// (enough for the headers it looks at); a header block over maxFrameHeader bytes is
// more than net/http takes (1 MB), so it answers 431 and closes.
const (
	maxFrameLine   = 8 << 10
	maxFrameHeader = 1 << 20
)

func newFraming() *framing { return &framing{first: true} }

// feed follows the bytes the server read from the connection.
func (f *framing) feed(p []byte) {
	for len(p) > 0 && f.state != frameDone {
		switch f.state {
		case frameBody, frameChunkData:
			n := min(int64(len(p)), f.left)
			f.left -= n
			p = p[n:]
			if f.left == 0 {
				if f.state == frameBody {
					f.startHeader()
				} else {
					f.state = frameChunkEnd
				}
			}
		default:
			i := bytes.IndexByte(p, '\n')
			end := i
			if i < 0 {
				end = len(p)
			}
			if room := maxFrameLine - len(f.line); room > 0 {
				f.line = append(f.line, p[:min(end, room)]...)
			}
			f.headerLen += end
			if i < 0 {
				p = nil
				if f.headerLen > maxFrameHeader {
					f.state = frameDone
				}
				continue
			}
			p = p[i+1:]
			line := string(bytes.TrimSuffix(f.line, []byte("\r")))
			f.line = f.line[:0]
			f.onLine(line)
		}
	}
}

func (f *framing) startHeader() {
	f.state, f.first = frameHeader, true
	f.hasCL, f.hasTE, f.http10, f.upgrade, f.cl, f.lastName, f.headerLen = false, false, false, false, "", "", 0
}

func (f *framing) onLine(line string) {
	switch f.state {
	case frameHeader:
		f.headerLine(line)
	case frameChunkSize:
		size, _, _ := strings.Cut(line, ";")
		n, err := strconv.ParseInt(strings.TrimSpace(size), 16, 64)
		switch {
		case err != nil || n < 0:
			f.state = frameDone // net/http fails the body and closes
		case n == 0:
			f.state = frameTrailer
		default:
			f.state, f.left = frameChunkData, n
		}
	case frameChunkEnd:
		f.state = frameChunkSize
		if line != "" {
			f.state = frameDone
		}
	case frameTrailer:
		if line == "" {
			f.startHeader()
		}
	}
}

func (f *framing) headerLine(line string) {
	if f.first {
		if line == "" {
			return // stray line ending before a request
		}
		f.first = false
		method, _, _ := strings.Cut(line, " ")
		major, minor, ok := httpVersion(line[strings.LastIndexByte(line, ' ')+1:])
		switch {
		case !ok || method == "CONNECT" || method == "PRI" || major > 1:
			f.state = frameDone // refused by net/http, or not HTTP/1.x
		case major == 0 || minor == 0:
			f.http10 = true
		}
		return
	}
	if line == "" {
		f.endHeader()
		return
	}
	if line[0] == ' ' || line[0] == '\t' {
		f.header(f.lastName, strings.TrimSpace(line), true) // obs-fold continuation
		return
	}
	name, value, ok := strings.Cut(line, ":")
	if !ok {
		return
	}
	f.lastName = strings.ToLower(strings.TrimSpace(name))
	f.header(f.lastName, strings.TrimSpace(value), false)
}

func (f *framing) header(name, value string, continued bool) {
	switch name {
	case "content-length":
		f.hasCL = true
		if continued {
			f.cl += value
		} else {
			f.cl = value
		}
	case "transfer-encoding":
		f.hasTE = true
	case "upgrade":
		f.upgrade = true
	}
}

func (f *framing) endHeader() {
	f.requests++
	// RFC 9112 §6.1 and §6.3: Transfer-Encoding with Content-Length, or in an HTTP/1.0
	// message, is faulty framing.
	if f.hasTE && (f.hasCL || f.http10) {
		f.smuggled = true
	}
	switch {
	case f.upgrade:
		f.state = frameDone
	case f.hasTE && !f.http10:
		f.state = frameChunkSize
	case f.hasCL:
		n, err := strconv.ParseInt(f.cl, 10, 64)
		if err != nil || n < 0 {
			f.state = frameDone // net/http answers 400 and closes
			return
		}
		if n == 0 {
			f.startHeader()
			return
		}
		f.state, f.left = frameBody, n
	default:
		f.startHeader()
	}
}

// httpVersion parses "HTTP/major.minor" as net/http does (digits only, no sign).
func httpVersion(v string) (major, minor int, ok bool) {
	rest, found := strings.CutPrefix(v, "HTTP/")
	if !found {
		return 0, 0, false
	}
	a, b, found := strings.Cut(rest, ".")
	if !found {
		return 0, 0, false
	}
	major, ok1 := smallInt(a)
	minor, ok2 := smallInt(b)
	return major, minor, ok1 && ok2
}

func smallInt(s string) (int, bool) {
	if s == "" || len(s) > 3 {
		return 0, false
	}
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}
