package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/forgeflow/forgeflow/diffusion/sd"
	"github.com/forgeflow/forgeflow/executor"
	"github.com/forgeflow/forgeflow/executor/store"
	"github.com/forgeflow/forgeflow/frontend"
	"github.com/forgeflow/forgeflow/server"
)

// comfyUIVersion is the ComfyUI release whose API this server speaks.
const comfyUIVersion = "0.3.64"

// serveOptions are serve's own flags besides the shared config.
type serveOptions struct {
	listen        optFlag
	port          int
	maxUploadMB   float64
	cors          optFlag
	frontEndRoot  string
	compress      bool
	queueDB       string
	queueURL      string
	workers       int
	shutdownGrace time.Duration
	multiUser     bool
	limits        serveLimits
	access        accessFlags
	// ready, when set (tests), receives the address the server listens on.
	ready func(addr string)
	// logs keeps the recent log lines for the editor's log panel (/internal/logs).
	logs *server.LogBuffer
}

func cmdServe(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return serve(ctx, args, stdout, stderr, nil)
}

func serve(ctx context.Context, args []string, stdout, stderr io.Writer, ready func(string)) int {
	fl, cfg, so := serveFlags(stderr)
	so.ready = ready
	if code, ok := parseFlagsOnly(fl, args); !ok {
		return code
	}
	so.logs = server.NewLogBuffer(0)
	log := slog.New(so.logs.Handler(cfg.logger(stdout, stderr).Handler()))
	warnNoOps(log, cfg.noOps)
	if err := runServer(ctx, cfg, so, log); err != nil {
		log.Error("server stopped", "err", err)
		return exitFailed
	}
	return exitOK
}

// serveFlags declares serve's command line: the shared config and serve's own flags.
func serveFlags(stderr io.Writer) (*flag.FlagSet, *config, *serveOptions) {
	var cfg config
	so := &serveOptions{listen: optFlag{val: "127.0.0.1", bare: "0.0.0.0,::"}, cors: optFlag{bare: "*"}}
	fl := flag.NewFlagSet("serve", flag.ContinueOnError)
	fl.SetOutput(stderr)
	cfg.register(fl)
	fl.Var(&so.listen, "listen", "`IP` addresses to listen on, comma-separated; --listen alone means 0.0.0.0,:: (every IPv4 and IPv6 address)")
	fl.IntVar(&so.port, "port", 8188, "port to listen on (0 picks a free one)")
	fl.Float64Var(&so.maxUploadMB, "max-upload-size", 100, "largest upload in MB")
	fl.Var(&so.cors, "enable-cors-header", "allow cross-origin requests from this origin; alone it means '*'")
	fl.BoolVar(&so.compress, "enable-compress-response-body", false, "gzip JSON answers for clients that accept it")
	fl.StringVar(&so.frontEndRoot, "front-end-root", "", "folder of the editor's files to serve at /")
	fl.StringVar(&so.queueDB, "queue-db", "", "queue and history database (default: USER/forgeflow.db)")
	fl.StringVar(&so.queueURL, "queue", "", "run on a NATS JetStream cluster instead of the local database: nats://h1:4222,nats://h2:4222,...")
	fl.IntVar(&so.workers, "workers", 1, "with --queue, how many prompts this process executes at once (0: accept only)")
	fl.DurationVar(&so.shutdownGrace, "shutdown-timeout", 10*time.Second, "how long to wait for requests on shutdown")
	fl.BoolVar(&so.multiUser, "multi-user", false, "per-user settings and userdata: the comfy-user header names a user of USER/users.json (POST /users adds one); requests naming no known user are refused")
	so.limits.register(fl)
	so.access.register(fl)
	return fl, &cfg, so
}

func runServer(ctx context.Context, cfg *config, so *serveOptions, log *slog.Logger) error {
	token, err := so.access.authToken()
	if err != nil {
		return err
	}
	tlsCfg, err := so.access.tlsConfig()
	if err != nil {
		return err
	}
	e, err := cfg.env(log)
	if err != nil {
		return err
	}
	defer e.closeDevice()
	mem := e.mem
	cache, err := cfg.cacheOptions(mem)
	if err != nil {
		return err
	}
	sd.CheckVocab(e.models, log)
	sd.CheckT5Tokenizer(e.models, log)
	// ComfyUI empties its temp folder at start (main.py cleanup_temp); it is always a
	// "temp" folder of its own, never one the user named.
	if err := os.RemoveAll(e.dirs.Temp); err != nil {
		log.Warn("cannot empty temp folder", "dir", e.dirs.Temp, "err", err)
	}
	for _, d := range []string{e.dirs.Output, e.dirs.Input, e.dirs.Temp, e.userDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	var be *backend
	if so.queueURL != "" {
		be, err = clusterBackend(ctx, cfg, so, e, cache, log)
	} else {
		be, err = localBackend(cfg, so, e, cache, log)
	}
	if err != nil {
		return err
	}
	defer be.close()
	eng := be.engine
	var static fs.FS = frontend.FS()
	if !frontend.Built() && so.frontEndRoot == "" {
		log.Warn("this binary was built without the editor; / serves a placeholder page (run make build)")
	}
	if so.frontEndRoot != "" {
		if st, err := os.Stat(filepath.Join(so.frontEndRoot, "index.html")); err != nil || !st.Mode().IsRegular() {
			return fmt.Errorf("--front-end-root %s: no index.html there", so.frontEndRoot)
		}
		static = os.DirFS(so.frontEndRoot)
	}
	var listeners []net.Listener
	var addrs, hosts []string
	for _, host := range strings.Split(so.listen.val, ",") {
		host = strings.TrimSpace(host)
		if host == "" {
			continue
		}
		hosts = append(hosts, host)
		ln, err := net.Listen(listenNetwork(host), net.JoinHostPort(host, strconv.Itoa(so.port)))
		if err != nil {
			for _, l := range listeners {
				l.Close()
			}
			return err
		}
		listeners = append(listeners, ln)
		addrs = append(addrs, host, ln.Addr().String())
	}
	if len(listeners) == 0 {
		return fmt.Errorf("--listen names no address")
	}
	warnOpen(log, hosts, token)
	maxConns := so.limits.maxConnections
	if nofile := raiseOpenFiles(); nofile > 0 {
		// Model files, the queue database and the log need descriptors too.
		if room := int(nofile) - openFilesReserve; room < maxConns {
			log.Warn("the open-file limit is below --max-connections; connections capped lower", "open_files", nofile, "max_connections", max(room, 1))
			maxConns = max(room, 1)
		}
	}
	srv, err := server.New(server.Options{
		Logger: log, Nodes: e.registry, Models: e.models, Memory: mem, Static: static, Engine: eng,
		MultiUser: so.multiUser,
		Dirs: server.Dirs{Output: e.dirs.Output, Input: e.dirs.Input, Temp: e.dirs.Temp, User: e.userDir,
			Blueprints: filepath.Join(e.base, "blueprints")},
		Logs:                 so.logs,
		MaxUploadSize:        int64(so.maxUploadMB * 1024 * 1024),
		MaxImagePixels:       cfg.maxImagePixels,
		MaxPromptNodes:       so.limits.maxPromptNodes,
		MaxConcurrentUploads: so.limits.maxUploads,
		MaxWSMessageSize:     so.limits.maxWSMessage,
		MaxWSMessageRate:     so.limits.maxWSRate,
		MaxConnections:       maxConns,
		ReadHeaderTimeout:    so.limits.readHeaderTimeout,
		ReadBodyTimeout:      so.limits.readBodyTimeout,
		IdleTimeout:          so.limits.idleTimeout,
		Listen:               addrs,
		AllowedHosts:         so.limits.allowedHosts,
		CORSOrigin:           so.cors.val,
		CompressResponses:    so.compress,
		Version:              comfyUIVersion,
		Argv:                 os.Args,
		AuthToken:            token,
		Downloads:            so.access.downloads(e.models, os.Getenv),
		Interrupt:            be.interrupt,
		FetchFile:            be.fetchFile,
	})
	if err != nil {
		for _, l := range listeners {
			l.Close()
		}
		return err
	}
	defer srv.Close()

	runCtx, stopRun := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRun()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := be.run(runCtx); err != nil {
			log.Error("executor stopped", "err", err)
		}
	}()
	go func() {
		defer wg.Done()
		srv.Forward(runCtx)
	}()

	hs := srv.NewHTTPServer()
	errc := make(chan error, len(listeners))
	scheme := "http://"
	for _, ln := range listeners {
		if tlsCfg != nil {
			// TLS inside the server's connection tracking, which reads plain requests.
			ln, scheme = tls.NewListener(ln, tlsCfg), "https://"
		}
		log.Info("listening", "url", scheme+ln.Addr().String())
		if so.ready != nil {
			so.ready(ln.Addr().String())
		}
		go func(ln net.Listener) { errc <- hs.Serve(srv.Listen(ln)) }(ln)
	}
	var serveErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case serveErr = <-errc:
	}
	// Stop taking requests, close websockets, then interrupt the running prompt: the
	// executor hands it back to the queue, so it runs again on the next start.
	shutCtx, cancel := context.WithTimeout(context.Background(), so.shutdownGrace)
	defer cancel()
	srv.Close()
	if err := hs.Shutdown(shutCtx); err != nil {
		log.Warn("shutdown", "err", err)
	}
	stopRun()
	wg.Wait()
	if errors.Is(serveErr, http.ErrServerClosed) {
		serveErr = nil
	}
	return serveErr
}

// backend is where serve's prompts go: the local bbolt queue and one engine, or a
// JetStream cluster (cluster.go).
type backend struct {
	engine    *executor.Engine // validates and submits; its events reach the websocket clients
	run       func(ctx context.Context) error
	close     func()
	interrupt func(promptID string)
	fetchFile func(ctx context.Context, typ, subfolder, name, dir string) error
}

func localBackend(cfg *config, so *serveOptions, e *env, cache executor.CacheOptions, log *slog.Logger) (*backend, error) {
	dbPath := so.queueDB
	if dbPath == "" {
		dbPath = filepath.Join(e.userDir, "forgeflow.db")
	}
	st, err := store.Open(dbPath, store.Options{Logger: log})
	if errors.Is(err, store.ErrNotQueue) {
		return nil, fmt.Errorf("%w (or start with --queue-db naming another file)", err)
	}
	if err != nil {
		return nil, err
	}
	eng, err := executor.New(executor.Options{Registry: e.registry, Queue: st, Dirs: e.dirs,
		Logger: log, Cache: cache, DisableMetadata: cfg.disableMetadata, MaxImagePixels: cfg.maxImagePixels})
	if err != nil {
		st.Close()
		return nil, err
	}
	return &backend{engine: eng, run: eng.Run, close: func() { st.Close() }}, nil
}

// listenNetwork picks tcp4 or tcp6 for an IP literal, so that "0.0.0.0,::" binds both
// families side by side (Go makes a "tcp" socket on [::] dual-stack, which would collide
// with the IPv4 one), and tcp for a host name.
func listenNetwork(host string) string {
	ip := net.ParseIP(host)
	switch {
	case ip == nil:
		return "tcp"
	case ip.To4() != nil:
		return "tcp4"
	}
	return "tcp6"
}

// openFilesReserve is the number of descriptors kept for everything but connections.
const openFilesReserve = 256

// serveLimits are serve's bounds on what clients control (codex/server.md "Limits").
type serveLimits struct {
	maxPromptNodes    int
	maxUploads        int
	maxWSMessage      int64
	maxWSRate         float64
	maxConnections    int
	readHeaderTimeout time.Duration
	readBodyTimeout   time.Duration
	idleTimeout       time.Duration
	allowedHosts      listFlag
}

func (l *serveLimits) register(fl *flag.FlagSet) {
	fl.IntVar(&l.maxPromptNodes, "max-prompt-nodes", server.DefaultMaxPromptNodes, "most nodes one prompt may have")
	fl.IntVar(&l.maxUploads, "max-concurrent-uploads", server.DefaultMaxConcurrentUploads, "most uploads (and user file writes) received at once; more wait for a slot")
	fl.Int64Var(&l.maxWSMessage, "max-ws-message-size", server.DefaultMaxWSMessageSize, "largest message a websocket client may send, in bytes")
	fl.Float64Var(&l.maxWSRate, "max-ws-message-rate", server.DefaultMaxWSMessageRate, "most messages per second a websocket client may send (burst of twice as many)")
	fl.IntVar(&l.maxConnections, "max-connections", server.DefaultMaxConnections, "most open connections; at the cap the longest-idle one is closed for a new one")
	fl.DurationVar(&l.readHeaderTimeout, "read-header-timeout", server.DefaultReadHeaderTimeout, "longest time to read a request's header")
	fl.DurationVar(&l.readBodyTimeout, "read-body-timeout", server.DefaultReadBodyTimeout, "longest wait for the next bytes of a request body")
	fl.DurationVar(&l.idleTimeout, "idle-timeout", server.DefaultIdleTimeout, "how long an idle keep-alive connection stays open")
	fl.Var(&l.allowedHosts, "allowed-hosts", "host names accepted in requests besides loopback ones when listening on loopback only, comma-separated (* for any); e.g. the name a reverse proxy forwards")
}
