package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/forgeflow/forgeflow/executor"
	"github.com/forgeflow/forgeflow/graph"
)

// Default limits (codex/server.md "Limits" lists every bound with its flag). ComfyUI's
// --max-upload-size defaults to 100 MB; a prompt is JSON and needs far less, but UI
// workflows embedded in extra_data can be large.
const (
	DefaultMaxUploadSize        = 100 << 20
	DefaultMaxPromptSize        = 32 << 20
	DefaultMaxPromptNodes       = 10000
	DefaultMaxConcurrentUploads = 8
	DefaultMaxWSMessageSize     = 1 << 20
	DefaultMaxWSMessageRate     = 100 // messages per second, with a burst of twice that
)

// Dirs are the folders the server reads and writes. Output, Input and Temp match
// ComfyUI's output/, input/ and temp/; User holds per-user data (ComfyUI's user/,
// with the single user "default").
type Dirs struct {
	Output string
	Input  string
	Temp   string
	User   string
	// Blueprints, when set, holds subgraph blueprints (*.json) served as global
	// subgraphs (/global_subgraphs), as ComfyUI's blueprints/ folder.
	Blueprints string
}

// Options configure a Server. Only Dirs is required; a nil dependency turns its routes
// into empty answers (no nodes, no models, an empty queue and history) or 503 (prompts
// and queue changes without an engine).
type Options struct {
	Logger *slog.Logger
	Dirs   Dirs
	// Nodes supplies /object_info.
	Nodes ObjectInfoSource
	// Engine runs prompts: POST /prompt submits to it (validation and the durable
	// push), /interrupt and /free act on it, Forward relays its events. Its queue
	// (Engine.Queue, which it must have) serves /queue, /history and the
	// queue_remaining of status messages directly.
	Engine *executor.Engine
	// Models lists model folders and files (/models, /embeddings, /view_metadata).
	Models Models
	// Memory reports RAM and devices for /system_stats and frees memory for /free.
	Memory Memory
	// Static holds the editor's files, served at /; nil serves a 404 with a hint.
	Static fs.FS
	// MultiUser is ComfyUI's --multi-user: the comfy-user header names the user whose
	// settings and userdata (Dirs.User/ID) a request reads and writes, one users.json
	// lists; a request naming no known user is refused. Without it every request is the
	// default user's.
	MultiUser bool
	// MaxUploadSize limits request bodies of uploads and userdata (bytes); 0 means
	// DefaultMaxUploadSize.
	MaxUploadSize int64
	// MaxPromptSize limits JSON request bodies (bytes); 0 means DefaultMaxPromptSize.
	MaxPromptSize int64
	// MaxImagePixels bounds the images the server decodes (/view conversions, mask
	// uploads) and accepts as uploads, checked on the header; 0 means
	// imagesize.DefaultMaxPixels.
	MaxImagePixels int64
	// MaxPromptNodes bounds the nodes of one prompt; 0 means DefaultMaxPromptNodes.
	MaxPromptNodes int
	// MaxConcurrentUploads bounds the uploads and userdata writes received at once
	// (each is spooled to disk, so this bounds disk and descriptors, not memory); 0
	// means DefaultMaxConcurrentUploads.
	MaxConcurrentUploads int
	// MaxWSMessageSize bounds one message a websocket client sends (bytes); 0 means
	// DefaultMaxWSMessageSize. A bigger message closes the connection.
	MaxWSMessageSize int64
	// MaxWSMessageRate bounds the messages per second one websocket client sends
	// (with a burst of twice as many); 0 means DefaultMaxWSMessageRate. A client over
	// it is disconnected.
	MaxWSMessageRate float64
	// AllowedHosts are host names accepted in the Host header besides loopback names
	// and the listen addresses, when every listen address is loopback (the DNS
	// rebinding check); "*" accepts any.
	AllowedHosts []string
	// Listen are the addresses (host:port) the server is reached at; with only
	// loopback ones, a request whose Host names anything else is refused.
	Listen []string
	// MaxConnections caps the open connections of listeners from Server.Listen; 0
	// means DefaultMaxConnections.
	MaxConnections int
	// ReadHeaderTimeout, ReadBodyTimeout and IdleTimeout are NewHTTPServer's
	// timeouts: reading a request's header, waiting for the next bytes of its body,
	// and keeping an idle connection open. 0 means the Default of each; a negative
	// value turns it off.
	ReadHeaderTimeout time.Duration
	ReadBodyTimeout   time.Duration
	IdleTimeout       time.Duration
	// CORSOrigin is --enable-cors-header: when set, every answer carries
	// Access-Control-Allow-Origin with it; when empty, cross-origin POSTs to a loopback
	// host are refused as ComfyUI does.
	CORSOrigin string
	// CompressResponses gzips JSON answers for clients that accept it
	// (--enable-compress-response-body).
	CompressResponses bool
	// Interrupt, when set, is what POST /interrupt calls instead of
	// Engine.Interrupt (a cluster front sends the interrupt to every worker).
	Interrupt func(promptID string)
	// FetchFile, when set, is asked for a file /view does not find: it may copy the
	// file TYPE/SUBFOLDER/NAME into dir, the folder of that type (a cluster front
	// fetches outputs other processes made), then /view looks again. It returns an
	// error wrapping fs.ErrNotExist when nobody has the file.
	FetchFile func(ctx context.Context, typ, subfolder, name, dir string) error
	// AuthToken, when set, is required on every request but the editor's own files
	// and CORS preflights: a Bearer header, or ?token= on a GET (auth.go).
	AuthToken string
	// Downloads turns on the model download route (downloads.go); nil leaves it off.
	Downloads *DownloadOptions
	// Version is reported as comfyui_version in /system_stats.
	Version string
	// Argv is reported in /system_stats.
	Argv []string
	// Logs keeps the process's recent log lines for /internal/logs; the process's
	// logger should write through Logs.Handler. When nil, the server keeps the lines
	// of its own Logger.
	Logs *LogBuffer
}

// ObjectInfoSource supplies node schemas. *nodes.Registry implements it.
type ObjectInfoSource interface {
	Names() []string
	Schema(class string) (*graph.Schema, bool)
}

// Server is ComfyUI's API. Create it with New and serve Handler.
type Server struct {
	opts    Options
	log     *slog.Logger // rate-limited per message
	engine  *executor.Engine
	queue   executor.Queue // the engine's; nil without an engine
	mux     *http.ServeMux
	handler http.Handler
	hub     *hub
	dl      *downloads // nil without Options.Downloads

	// settingsMu serialises read-modify-write of the settings files; usersMu guards
	// users and the writes of users.json.
	settingsMu sync.Mutex
	usersMu    sync.Mutex
	users      map[string]string // users.json once read (loadUsers); nil before
	// uploads holds one token per upload being received (MaxConcurrentUploads);
	// one waits at most uploadWait for a token.
	uploads    chan struct{}
	uploadWait time.Duration
	// logLimit rate-limits log (see loglimit.go).
	logLimit *logLimiter
	hosts    hostCheck
	conns    *conns

	// logSubs are the websocket clients that asked for log lines
	// (/internal/logs/subscribe); the lines are forwarded from the first subscription
	// until Close.
	logSubsMu sync.Mutex
	logSubs   map[string]bool
	logsOnce  sync.Once
	stopLogs  func()
	closed    chan struct{}
	closeOnce sync.Once
}

// New checks the options and builds the routes.
func New(opts Options) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Logs == nil {
		opts.Logs = NewLogBuffer(0)
		opts.Logger = slog.New(opts.Logs.Handler(opts.Logger.Handler()))
	}
	if opts.MaxUploadSize <= 0 {
		opts.MaxUploadSize = DefaultMaxUploadSize
	}
	if opts.MaxPromptSize <= 0 {
		opts.MaxPromptSize = DefaultMaxPromptSize
	}
	if opts.MaxPromptNodes <= 0 {
		opts.MaxPromptNodes = DefaultMaxPromptNodes
	}
	if opts.MaxConcurrentUploads <= 0 {
		opts.MaxConcurrentUploads = DefaultMaxConcurrentUploads
	}
	if opts.MaxWSMessageSize <= 0 {
		opts.MaxWSMessageSize = DefaultMaxWSMessageSize
	}
	if opts.MaxWSMessageRate <= 0 {
		opts.MaxWSMessageRate = DefaultMaxWSMessageRate
	}
	if opts.MaxConnections <= 0 {
		opts.MaxConnections = DefaultMaxConnections
	}
	for _, t := range []struct {
		v   *time.Duration
		def time.Duration
	}{{&opts.ReadHeaderTimeout, DefaultReadHeaderTimeout}, {&opts.ReadBodyTimeout, DefaultReadBodyTimeout}, {&opts.IdleTimeout, DefaultIdleTimeout}} {
		switch {
		case *t.v == 0:
			*t.v = t.def
		case *t.v < 0:
			*t.v = 0
		}
	}
	for name, dir := range map[string]string{"output": opts.Dirs.Output, "input": opts.Dirs.Input, "temp": opts.Dirs.Temp, "user": opts.Dirs.User} {
		if dir == "" {
			return nil, fmt.Errorf("server: options: %s directory not set", name)
		}
	}
	// Every line the server logs is caused by a request or an event, so all of them
	// are rate-limited, per message.
	limit := newLogLimiter(clientLogRate, clientLogBurst)
	s := &Server{opts: opts, log: slog.New(limit.handler(opts.Logger.Handler(), recordMessage)), logLimit: limit,
		mux: http.NewServeMux(), engine: opts.Engine, uploads: make(chan struct{}, opts.MaxConcurrentUploads),
		uploadWait: uploadSlotWait, conns: newConns(opts.MaxConnections),
		logSubs: map[string]bool{}, closed: make(chan struct{})}
	s.hosts = newHostCheck(opts.Listen, opts.AllowedHosts)
	if s.engine != nil {
		if s.queue = s.engine.Queue(); s.queue == nil {
			return nil, errors.New("server: options: the engine has no queue")
		}
	}
	s.hub = newHub(s)
	s.routes()
	var h http.Handler = s.mux
	if opts.CompressResponses {
		h = s.compressMiddleware(h)
	}
	s.handler = s.recoverMiddleware(s.originMiddleware(s.authMiddleware(h)))
	return s, nil
}

// Handler returns the server's http.Handler.
func (s *Server) Handler() http.Handler { return s.handler }

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// Close disconnects every websocket client, stops forwarding log lines and stops the
// model downloads (their partial files stay, to be resumed).
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		close(s.closed)
		s.logSubsMu.Lock()
		stop := s.stopLogs
		s.logSubsMu.Unlock()
		if stop != nil {
			stop()
		}
	})
	s.hub.closeAll()
	if s.dl != nil {
		s.dl.close()
	}
	return nil
}

// route registers h at pattern ("METHOD /path") and at the same path under /api, as
// ComfyUI's add_routes does.
func (s *Server) route(pattern string, h http.HandlerFunc) {
	method, path, ok := strings.Cut(pattern, " ")
	if !ok {
		panic("server: route pattern without method: " + pattern)
	}
	s.mux.HandleFunc(pattern, h)
	s.mux.HandleFunc(method+" /api"+path, h)
}

func (s *Server) routes() {
	s.websocketRoutes()
	s.promptRoutes()
	s.jobRoutes()
	s.historyRoutes()
	s.objectInfoRoutes()
	s.viewRoutes()
	s.uploadRoutes()
	s.modelRoutes()
	s.systemRoutes()
	s.settingsRoutes()
	s.userdataRoutes()
	s.userRoutes()
	s.modelPreviewRoutes()
	s.subgraphRoutes()
	s.internalRoutes()
	s.staticRoutes()
}

// apiError is the JSON body of every error this server writes itself. ComfyUI answers
// most bad requests with an empty body; a JSON object with the same status is what a
// client can show, and "error" is the key ComfyUI uses where it does write one.
type apiError struct {
	Error   string `json:"error"`
	Details string `json:"details,omitempty"`
}

func (s *Server) writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		s.log.Error("encode json answer", "err", err)
		http.Error(w, `{"error":"internal error"}`, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func (s *Server) writeError(w http.ResponseWriter, status int, msg string, details ...string) {
	e := apiError{Error: msg}
	if len(details) > 0 {
		e.Details = strings.Join(details, "; ")
	}
	s.writeJSON(w, status, e)
}

// readJSON decodes a JSON body of at most limit bytes into v. It writes the error answer
// itself and reports false on failure: 413 for an oversized body, 400 for bad JSON.
func (s *Server) readJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) bool {
	body, ok := s.readBody(w, r, limit)
	if !ok {
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		s.writeError(w, http.StatusBadRequest, "invalid JSON body", err.Error())
		return false
	}
	if dec.More() {
		s.writeError(w, http.StatusBadRequest, "invalid JSON body", "trailing data after the JSON value")
		return false
	}
	return true
}

// readBody reads the whole body, refusing more than limit bytes with 413.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			s.writeError(w, http.StatusRequestEntityTooLarge, "request body too large", fmt.Sprintf("limit is %d bytes", mbe.Limit))
			return nil, false
		}
		s.writeError(w, http.StatusBadRequest, "cannot read request body", err.Error())
		return nil, false
	}
	return body, true
}

// recoverMiddleware turns a panicking handler into a 500 with a JSON error, so that one
// bad request never takes the server down.
func (s *Server) recoverMiddleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.log.Error("handler panic", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			s.writeError(w, http.StatusInternalServerError, "internal server error")
		}()
		next.ServeHTTP(w, r)
	})
}
