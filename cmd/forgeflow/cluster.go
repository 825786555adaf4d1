package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/forgeflow/forgeflow/cluster"
	"github.com/forgeflow/forgeflow/cmd/forgeflow/internal/batch"
	"github.com/forgeflow/forgeflow/executor"
)

// clusterBackend is serve --queue: prompts go to the JetStream cluster at
// so.queueURL, this process runs so.workers workers, and the events of every
// worker of the cluster reach this server's websocket clients.
func clusterBackend(ctx context.Context, cfg *config, so *serveOptions, e *env, cache executor.CacheOptions, log *slog.Logger) (*backend, error) {
	if so.workers < 0 {
		return nil, fmt.Errorf("--workers must not be negative")
	}
	host, _ := os.Hostname()
	front := fmt.Sprintf("%s-serve%d", host, so.port)
	nc, err := cluster.Connect(so.queueURL, front, log)
	if err != nil {
		return nil, err
	}
	q, err := cluster.OpenConn(ctx, nc, cluster.Options{Name: front, InputDir: e.dirs.Input, Logger: log})
	if err != nil {
		nc.Close()
		return nil, err
	}
	eng, err := executor.New(executor.Options{Registry: e.registry, Queue: q, Dirs: e.dirs, Logger: log, Cache: cache, DisableMetadata: cfg.disableMetadata, MaxImagePixels: cfg.maxImagePixels})
	if err != nil {
		q.Close()
		nc.Close()
		return nil, err
	}
	relay, stopRelay := context.WithCancel(context.Background())
	if err := q.Events(relay, eng.Publish); err != nil {
		stopRelay()
		q.Close()
		nc.Close()
		return nil, err
	}
	var workers []*cluster.Worker
	closeAll := func() {
		stopRelay()
		q.Close()
		nc.Close()
	}
	for i := 1; i <= so.workers; i++ {
		w, err := cluster.NewWorker(ctx, nc, workerOptions(cfg, e, cache, log, fmt.Sprintf("%s-%d", front, i), 0, 0))
		if err != nil {
			closeAll()
			return nil, err
		}
		workers = append(workers, w)
	}
	log.Info("serving a JetStream cluster", "queue", so.queueURL, "workers", so.workers)
	return &backend{
		engine: eng,
		run:    func(ctx context.Context) error { return runWorkers(ctx, workers) },
		close:  closeAll,
		interrupt: func(id string) {
			if err := q.Interrupt(id); err != nil {
				log.Warn("send interrupt to the cluster", "err", err)
			}
		},
		fetchFile: q.FetchOutput,
	}, nil
}

// runWorkers runs workers until ctx is done (with none, it only waits).
func runWorkers(ctx context.Context, workers []*cluster.Worker) error {
	if len(workers) == 0 {
		<-ctx.Done()
		return nil
	}
	errs := make([]error, len(workers))
	var wg sync.WaitGroup
	for i, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = w.Run(ctx)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// workerOptions builds a worker named name over the environment e: its engine, and
// the models and memory it advertises.
func workerOptions(cfg *config, e *env, cache executor.CacheOptions, log *slog.Logger, name string, lease, hang time.Duration) cluster.WorkerOptions {
	return cluster.WorkerOptions{
		Queue:  cluster.Options{Name: name, Logger: log, LeaseTimeout: lease, HangTimeout: hang},
		Engine: executor.Options{Registry: e.registry, Dirs: e.dirs, Logger: log, Cache: cache, DisableMetadata: cfg.disableMetadata},
		Models: func() []string { return modelNames(e) },
		Loaded: func() []string { return loadedModels(e) },
		Device: deviceName(e),
		FreeMemory: func() int64 {
			s := e.mem.Stats()
			return s.RAMFree
		},
	}
}

// modelNames lists every model file of every folder, as prompts name them.
func modelNames(e *env) []string {
	var out []string
	for _, f := range e.models.Folders() {
		names, err := e.models.List(f)
		if err != nil {
			continue
		}
		out = append(out, names...)
	}
	return out
}

// loadedModels names the model files the memory manager holds.
func loadedModels(e *env) []string {
	var out []string
	for _, m := range e.mem.Stats().Models {
		for _, f := range e.models.Folders() {
			dirs, err := e.models.Dirs(f)
			if err != nil {
				continue
			}
			for _, d := range dirs {
				if rel, err := filepath.Rel(d, m.Path); err == nil && !strings.HasPrefix(rel, "..") {
					out = append(out, filepath.ToSlash(rel))
				}
			}
		}
	}
	return out
}

func deviceName(e *env) string {
	if devs := e.mem.Stats().Devices; len(devs) > 0 {
		return devs[0].Name
	}
	return "cpu"
}

func cmdWorker(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var cfg config
	fl := flag.NewFlagSet("worker", flag.ContinueOnError)
	fl.SetOutput(stderr)
	cfg.register(fl)
	host, _ := os.Hostname()
	queueURL := fl.String("queue", "", "the JetStream cluster: nats://h1:4222,nats://h2:4222,... (required)")
	name := fl.String("name", host, "this worker's name, unique in the cluster (its outputs go to output/NAME)")
	lease := fl.Duration("lease-timeout", 0, "how long a worker that stopped heartbeating keeps its prompt (default 30s; a cluster-wide setting)")
	hang := fl.Duration("hang-timeout", 0, "how long a prompt may show no progress before its lease is let go (default 10m)")
	if code, ok := parseFlags(fl, args); !ok {
		return code
	}
	if *queueURL == "" || fl.NArg() > 0 {
		fmt.Fprintln(stderr, "forgeflow worker: --queue is required and no arguments are taken")
		return exitUsage
	}
	log := cfg.logger(stdout, stderr)
	e, err := cfg.env(log)
	if err != nil {
		log.Error("worker", "err", err)
		return exitFailed
	}
	cache, err := cfg.cacheOptions(e.mem)
	if err != nil {
		fmt.Fprintln(stderr, "forgeflow worker:", err)
		return exitUsage
	}
	for _, d := range []string{e.dirs.Output, e.dirs.Input, e.dirs.Temp} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			log.Error("worker", "err", err)
			return exitFailed
		}
	}
	nc, err := cluster.Connect(*queueURL, *name, log)
	if err != nil {
		log.Error("worker", "err", err)
		return exitFailed
	}
	defer nc.Close()
	w, err := cluster.NewWorker(ctx, nc, workerOptions(&cfg, e, cache, log, *name, *lease, *hang))
	if err != nil {
		log.Error("worker", "err", err)
		return exitFailed
	}
	log.Info("worker running", "name", *name, "queue", *queueURL, "models", len(modelNames(e)))
	if err := w.Run(ctx); err != nil {
		log.Error("worker stopped", "err", err)
		return exitFailed
	}
	return exitOK
}

func cmdNats(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var o cluster.NodeOptions
	var routes listFlag
	var verbose bool
	fl := flag.NewFlagSet("nats", flag.ContinueOnError)
	fl.SetOutput(stderr)
	fl.StringVar(&o.StoreDir, "store", "", "folder of the JetStream data (required)")
	fl.StringVar(&o.Host, "listen", "127.0.0.1", "address clients connect to")
	fl.IntVar(&o.Port, "port", 4222, "client port (0 picks a free one)")
	fl.StringVar(&o.Name, "name", "", "server name, unique in the cluster (default HOST:PORT)")
	fl.StringVar(&o.ClusterName, "cluster-name", "", "cluster name, the same on every node")
	fl.StringVar(&o.ClusterListen, "cluster-listen", "", "HOST:PORT the other nodes connect to")
	fl.Var(&routes, "routes", "nats://HOST:PORT of the other nodes' cluster ports, comma-separated or repeated")
	fl.BoolVar(&verbose, "verbose", false, "log the server's debug messages")
	if code, ok := parseFlags(fl, args); !ok {
		return code
	}
	if o.StoreDir == "" || fl.NArg() > 0 {
		fmt.Fprintln(stderr, "forgeflow nats: --store is required and no arguments are taken")
		return exitUsage
	}
	for _, r := range routes {
		for _, u := range strings.Split(r, ",") {
			if u = strings.TrimSpace(u); u != "" {
				o.Routes = append(o.Routes, u)
			}
		}
	}
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	o.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	n, err := cluster.StartNode(o)
	if err != nil {
		fmt.Fprintln(stderr, "forgeflow nats:", err)
		return exitFailed
	}
	fmt.Fprintf(stdout, "forgeflow nats: %s serving %s (store %s)\n", n.Name(), n.ClientURL(), o.StoreDir)
	<-ctx.Done()
	n.Shutdown()
	return exitOK
}

// runQueued is run --queue: the files go to the cluster at urls and are followed
// there (batch.RunQueued), the cluster's events relayed into a local engine.
func runQueued(ctx context.Context, cfg *config, e *env, urls string, files []string, opts batch.RunOptions, log *slog.Logger, stdout, stderr io.Writer) int {
	host, _ := os.Hostname()
	q, err := cluster.Open(ctx, urls, cluster.Options{Name: host + "-run" + strconv.Itoa(os.Getpid()), InputDir: e.dirs.Input, Logger: log})
	if err != nil {
		fmt.Fprintln(stderr, "forgeflow run:", err)
		return exitFailed
	}
	defer q.Close()
	eng, err := executor.New(executor.Options{Registry: e.registry, Queue: q, Dirs: e.dirs, Logger: log, DisableMetadata: cfg.disableMetadata, MaxImagePixels: cfg.maxImagePixels})
	if err != nil {
		fmt.Fprintln(stderr, "forgeflow run:", err)
		return exitFailed
	}
	relay, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	if err := q.Events(relay, eng.Publish); err != nil {
		fmt.Fprintln(stderr, "forgeflow run:", err)
		return exitFailed
	}
	interrupt := func(id string) {
		if err := q.Interrupt(id); err != nil {
			log.Warn("send interrupt to the cluster", "err", err)
		}
	}
	return exitCode(stderr, "run", batch.RunQueued(ctx, eng, e.batchEnv(), files, opts, interrupt, stdout, stderr))
}
