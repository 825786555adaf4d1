package server

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// DefaultLogLines is how many log lines a LogBuffer keeps, as ComfyUI's log
// interceptor (app/logger.py, capacity 300).
const DefaultLogLines = 300

// maxLogLine bounds one kept line (bytes), so that the buffer stays small whatever a
// record holds.
const maxLogLine = 8 << 10

// LogEntry is one log line as /internal/logs/raw and the "logs" websocket message carry
// it: t is the local time in ISO 8601, m the line.
type LogEntry struct {
	T string `json:"t"`
	M string `json:"m"`
}

// LogBuffer keeps the last log lines of the process for the editor's log panel
// (/internal/logs) and hands new lines to watchers (the "logs" websocket messages).
// Wrap the process's slog handler with Handler so that every record also lands here,
// and give the buffer to the server in Options.Logs. It is safe for concurrent use.
type LogBuffer struct {
	mu       sync.Mutex
	lines    []LogEntry // ring of cap lines, oldest at start
	start    int
	watchers map[chan LogEntry]struct{}
	text     slog.Handler // formats records into the ring
}

// NewLogBuffer returns a buffer of the last lines lines (DefaultLogLines when lines <= 0).
func NewLogBuffer(lines int) *LogBuffer {
	if lines <= 0 {
		lines = DefaultLogLines
	}
	b := &LogBuffer{lines: make([]LogEntry, 0, lines), watchers: map[chan LogEntry]struct{}{}}
	// The entry has its own time; the line is slog's text form without it.
	b.text = slog.NewTextHandler(ringWriter{b}, &slog.HandlerOptions{Level: slog.LevelDebug, ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
		if len(groups) == 0 && a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}})
	return b
}

// ringWriter receives one formatted record per Write (slog's text handler writes a
// record in one call).
type ringWriter struct{ b *LogBuffer }

func (w ringWriter) Write(p []byte) (int, error) {
	m := string(p)
	if len(m) > maxLogLine {
		m = strings.ToValidUTF8(m[:maxLogLine], "") + "…\n"
	}
	w.b.add(LogEntry{T: time.Now().Format("2006-01-02T15:04:05.000000"), M: m})
	return len(p), nil
}

func (b *LogBuffer) add(e LogEntry) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.lines) < cap(b.lines) {
		b.lines = append(b.lines, e)
	} else {
		b.lines[b.start] = e
		b.start = (b.start + 1) % len(b.lines)
	}
	for ch := range b.watchers {
		select {
		case ch <- e:
		default: // a watcher that falls behind misses lines rather than stall logging
		}
	}
}

// Entries returns the kept lines, oldest first.
func (b *LogBuffer) Entries() []LogEntry {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]LogEntry, 0, len(b.lines))
	out = append(out, b.lines[b.start:]...)
	return append(out, b.lines[:b.start]...)
}

// watch returns a channel of the lines added from now on, until stop is called.
func (b *LogBuffer) watch(backlog int) (<-chan LogEntry, func()) {
	ch := make(chan LogEntry, backlog)
	b.mu.Lock()
	b.watchers[ch] = struct{}{}
	b.mu.Unlock()
	return ch, func() {
		b.mu.Lock()
		delete(b.watchers, ch)
		b.mu.Unlock()
	}
}

// Handler returns a handler that passes records to next as next itself would take
// them, and keeps those next accepts and every one at LevelInfo or above (the log panel
// shows what the server does even when the console is set quieter).
func (b *LogBuffer) Handler(next slog.Handler) slog.Handler {
	return teeHandler{next: next, text: b.text}
}

type teeHandler struct{ next, text slog.Handler }

func (h teeHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo || h.next.Enabled(ctx, l)
}

func (h teeHandler) Handle(ctx context.Context, r slog.Record) error {
	_ = h.text.Handle(ctx, r) // the ring cannot fail
	if !h.next.Enabled(ctx, r.Level) {
		return nil
	}
	return h.next.Handle(ctx, r)
}

func (h teeHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return teeHandler{next: h.next.WithAttrs(as), text: h.text.WithAttrs(as)}
}

func (h teeHandler) WithGroup(name string) slog.Handler {
	return teeHandler{next: h.next.WithGroup(name), text: h.text.WithGroup(name)}
}
