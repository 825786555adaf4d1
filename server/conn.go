package server

import (
	"container/list"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// Connection-level limits and their defaults (codex/server.md "Limits").
const (
	DefaultMaxConnections    = 4096
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadBodyTimeout   = 30 * time.Second
	DefaultIdleTimeout       = 60 * time.Second
)

// conns tracks the server's connections: it caps how many are open (closing the
// connection idle the longest to make room, refusing a new one with 503 when none is
// idle), and follows each connection's request framing (framing) so that a request
// with both Content-Length and Transfer-Encoding is refused and its connection closed.
type conns struct {
	max int

	mu   sync.Mutex
	open int
	idle *list.List // *trackedConn waiting for a request (new or keep-alive), oldest first
}

func newConns(max int) *conns { return &conns{max: max, idle: list.New()} }

// trackedConn is an accepted connection.
type trackedConn struct {
	net.Conn
	c *conns

	mu    sync.Mutex
	frame *framing

	// idleAt and gone belong to c.mu.
	idleAt *list.Element
	gone   bool
}

func (tc *trackedConn) Read(p []byte) (int, error) {
	n, err := tc.Conn.Read(p)
	if n > 0 {
		tc.mu.Lock()
		if tc.frame != nil {
			tc.frame.feed(p[:n])
		}
		tc.mu.Unlock()
	}
	return n, err
}

// smuggled reports whether a request of this connection carried both Content-Length
// and Transfer-Encoding.
func (tc *trackedConn) smuggled() bool {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	return tc.frame != nil && tc.frame.smuggled
}

func (tc *trackedConn) Close() error {
	err := tc.Conn.Close()
	tc.c.mu.Lock()
	if !tc.gone {
		tc.gone = true
		tc.c.open--
		tc.c.setIdle(tc, false)
	}
	tc.c.mu.Unlock()
	return err
}

// setIdle moves tc in or out of the idle list; c.mu is held.
func (c *conns) setIdle(tc *trackedConn, idle bool) {
	if tc.idleAt != nil {
		c.idle.Remove(tc.idleAt)
		tc.idleAt = nil
	}
	if idle {
		tc.idleAt = c.idle.PushBack(tc)
	}
}

// admit counts a new connection, making room by closing the connection idle the
// longest when the cap is reached; it reports false when every connection is busy.
func (c *conns) admit() bool {
	c.mu.Lock()
	var evict *trackedConn
	if c.open >= c.max {
		if e := c.idle.Front(); e != nil {
			evict = e.Value.(*trackedConn)
			c.setIdle(evict, false)
		}
	}
	ok := c.open < c.max || evict != nil
	if ok {
		c.open++
	}
	c.mu.Unlock()
	if evict != nil {
		evict.Close() // counted down by its Close, after this one was counted
	}
	return ok
}

// state is the http.Server's ConnState hook.
func (c *conns) state(nc net.Conn, st http.ConnState) {
	tc, ok := nc.(*trackedConn)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if tc.gone {
		return
	}
	switch st {
	case http.StateNew, http.StateIdle:
		c.setIdle(tc, true)
	case http.StateActive, http.StateHijacked, http.StateClosed:
		c.setIdle(tc, false)
	}
	if st == http.StateHijacked {
		// A hijacked connection (a websocket) is no longer HTTP: stop following it.
		tc.mu.Lock()
		tc.frame = nil
		tc.mu.Unlock()
	}
}

// listener counts and wraps the connections it accepts.
type listener struct {
	net.Listener
	c *conns
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.c.admit() {
			return &trackedConn{Conn: nc, c: l.c, frame: newFraming()}, nil
		}
		// Every connection is busy: answer this one and close it, rather than leave
		// it waiting in the kernel's backlog.
		_ = nc.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = io.WriteString(nc, "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 36\r\n\r\n{\"error\":\"too many open connections\"}")
		nc.Close()
	}
}

type connKey struct{}

// Listen wraps ln so that the server counts its connections (MaxConnections) and
// checks their request framing; serve it with the http.Server NewHTTPServer returns.
func (s *Server) Listen(ln net.Listener) net.Listener { return &listener{Listener: ln, c: s.conns} }

// NewHTTPServer returns the http.Server for the server's handler with its limits: the
// read-header and idle timeouts, the read-body timeout (the longest wait for the next
// bytes of a body), the connection cap and framing checks of Listen's connections,
// and the rate-limited error log. Serve it on listeners from Listen.
func (s *Server) NewHTTPServer() *http.Server {
	return &http.Server{
		Handler:           s.connMiddleware(s),
		ReadHeaderTimeout: s.opts.ReadHeaderTimeout,
		IdleTimeout:       s.opts.IdleTimeout,
		MaxHeaderBytes:    http.DefaultMaxHeaderBytes,
		ErrorLog:          s.HTTPErrorLog(),
		ConnState:         s.conns.state,
		ConnContext: func(ctx context.Context, nc net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, nc)
		},
	}
}

// connMiddleware refuses a request that carried both Content-Length and
// Transfer-Encoding (400, connection closed), and bounds how long a body may stall.
func (s *Server) connMiddleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tc, ok := r.Context().Value(connKey{}).(*trackedConn); ok && tc.smuggled() {
			s.log.Warn("request refused: both Content-Length and Transfer-Encoding", "remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path)
			w.Header().Set("Connection", "close")
			s.writeError(w, http.StatusBadRequest, "bad request framing", "a request may not carry both Content-Length and Transfer-Encoding (RFC 9112 section 6.3)")
			return
		}
		if r.Body != nil && r.Body != http.NoBody && s.opts.ReadBodyTimeout > 0 {
			sr := &stallReader{ReadCloser: r.Body, rc: http.NewResponseController(w), timeout: s.opts.ReadBodyTimeout}
			r.Body = sr
			defer sr.done()
		}
		next.ServeHTTP(w, r)
	})
}

// stallReader sets the connection's read deadline before each read of a body, so a
// body that sends nothing for the timeout fails instead of holding its connection
// forever; a slow but moving upload goes on.
type stallReader struct {
	io.ReadCloser
	rc      *http.ResponseController
	timeout time.Duration
	eof     bool
}

func (r *stallReader) Read(p []byte) (int, error) {
	_ = r.rc.SetReadDeadline(time.Now().Add(r.timeout))
	n, err := r.ReadCloser.Read(p)
	if errors.Is(err, io.EOF) {
		r.eof = true
		_ = r.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

// done runs when the handler returns. A body read to its end leaves no deadline (the
// connection waits for its next request under the server's own timeouts); a body left
// unread is drained by net/http before the next request, under one more stall
// timeout, so a stalled client cannot hold the connection through the drain either.
func (r *stallReader) done() {
	if r.eof {
		return
	}
	_ = r.rc.SetReadDeadline(time.Now().Add(r.timeout))
}
