package server

import (
	"context"
	"log"
	"log/slog"
	"sync"
	"time"
)

// Log lines that clients cause (a refused origin, an invalid websocket message, an
// invalid prompt: every line the server writes comes from a request or an event) go
// through a logLimiter, so that a client cannot fill the log: a flood of 100,000 bad
// messages writes a few lines, the later ones saying how many similar lines were
// suppressed.
const (
	clientLogRate  = 1  // lines per second per kind, after the burst
	clientLogBurst = 10 // lines of one kind written before the rate applies
	maxLogKinds    = 256
)

// logLimiter is a token bucket per kind of line.
type logLimiter struct {
	rate, burst float64
	now         func() time.Time

	mu    sync.Mutex
	kinds map[string]*logBucket
}

type logBucket struct {
	tokens     float64
	last       time.Time
	suppressed int
}

func newLogLimiter(rate, burst float64) *logLimiter {
	return &logLimiter{rate: rate, burst: burst, now: time.Now, kinds: map[string]*logBucket{}}
}

// allow reports whether a line of this kind may be written now, and how many lines of
// the kind were suppressed since the last one written.
func (l *logLimiter) allow(kind string) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b := l.kinds[kind]
	if b == nil {
		if len(l.kinds) >= maxLogKinds {
			kind = "" // every further kind shares one bucket
			b = l.kinds[kind]
		}
		if b == nil {
			b = &logBucket{tokens: l.burst, last: now}
			l.kinds[kind] = b
		}
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens < 1 {
		b.suppressed++
		return false, 0
	}
	b.tokens--
	n := b.suppressed
	b.suppressed = 0
	return true, n
}

// handler wraps next so that records go through the limiter, by the kind kind(r)
// names.
func (l *logLimiter) handler(next slog.Handler, kind func(slog.Record) string) slog.Handler {
	return &limitedHandler{next: next, lim: l, kind: kind}
}

// recordMessage is the kind of a line with a constant message (the style of every
// slog call here).
func recordMessage(r slog.Record) string { return r.Message }

type limitedHandler struct {
	next slog.Handler
	lim  *logLimiter
	kind func(slog.Record) string
}

func (h *limitedHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

func (h *limitedHandler) Handle(ctx context.Context, r slog.Record) error {
	ok, suppressed := h.lim.allow(h.kind(r))
	if !ok {
		return nil
	}
	if suppressed > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int("suppressed_similar", suppressed))
	}
	return h.next.Handle(ctx, r)
}

func (h *limitedHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &limitedHandler{next: h.next.WithAttrs(attrs), lim: h.lim, kind: h.kind}
}

func (h *limitedHandler) WithGroup(name string) slog.Handler {
	return &limitedHandler{next: h.next.WithGroup(name), lim: h.lim, kind: h.kind}
}

// HTTPErrorLog is a logger for http.Server.ErrorLog: net/http's own lines about bad
// connections (TLS handshakes, malformed requests) are caused by clients, so they are
// rate-limited as one kind.
func (s *Server) HTTPErrorLog() *log.Logger {
	h := s.logLimit.handler(s.opts.Logger.Handler(), func(slog.Record) string { return "net/http" })
	return slog.NewLogLogger(h, slog.LevelWarn)
}
