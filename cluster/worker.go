package cluster

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/forgeflow/forgeflow/executor"
)

// WorkerOptions configure a Worker.
type WorkerOptions struct {
	// Queue are the options of the worker's queue; Queue.Name is the worker's name
	// and its output subfolder.
	Queue Options
	// Engine configures the worker's engine. Its Queue is set by NewWorker, and its
	// Dirs.Output and Dirs.Temp get the worker's name as a subfolder, so the files of
	// two workers never share a name.
	Engine executor.Options
	// Models lists the model files this worker has, as prompts name them (folder
	// listings: "sd15.safetensors", "sdxl/base.safetensors"); nil means the worker
	// takes any prompt. Loaded lists those loaded in memory now.
	Models func() []string
	Loaded func() []string
	// Device names the worker's device and FreeMemory its free memory in bytes, for
	// the workers bucket.
	Device     string
	FreeMemory func() int64
}

// Worker executes prompts of the cluster: it leases from the Queue with its Engine,
// forwards the engine's events to the serve fronts (publishing output files as they
// are made), heartbeats its lease while the prompt makes progress, obeys cluster
// interrupts and advertises its models.
type Worker struct {
	o      WorkerOptions
	q      *Queue
	engine *executor.Engine

	lostMu sync.Mutex
	lost   []string // recent prompts whose lease this worker lost: their events are dropped
}

// NewWorker opens the worker's queue on nc and builds its engine.
func NewWorker(ctx context.Context, nc *nats.Conn, o WorkerOptions) (*Worker, error) {
	if o.Queue.InputDir == "" {
		o.Queue.InputDir = o.Engine.Dirs.Input
	}
	q, err := OpenConn(ctx, nc, o.Queue)
	if err != nil {
		return nil, err
	}
	name := q.opts.Name
	sub := advertKey(name)
	eo := o.Engine
	eo.Queue = q
	if eo.Dirs.Output != "" {
		eo.Dirs.Output = filepath.Join(eo.Dirs.Output, sub)
	}
	if eo.Dirs.Temp != "" {
		eo.Dirs.Temp = filepath.Join(eo.Dirs.Temp, sub)
	}
	q.outputs = &outputDirs{sub: sub, output: eo.Dirs.Output, temp: eo.Dirs.Temp}
	if eo.Logger == nil {
		eo.Logger = q.log
	}
	eng, err := executor.New(eo)
	if err != nil {
		q.Close()
		return nil, err
	}
	w := &Worker{o: o, q: q, engine: eng}
	q.onLost = func(id string) {
		w.markLost(id)
		eng.Interrupt(id)
	}
	return w, nil
}

// Queue returns the worker's queue.
func (w *Worker) Queue() *Queue { return w.q }

// Engine returns the worker's engine.
func (w *Worker) Engine() *executor.Engine { return w.engine }

// Run executes prompts until ctx is done; the prompt running then is handed back to
// the cluster (another worker takes it at once). It closes the worker's queue.
func (w *Worker) Run(ctx context.Context) error {
	defer w.q.Close()
	if err := w.advertise(ctx); err != nil {
		return fmt.Errorf("cluster: worker %s: advertise: %w", w.q.opts.Name, err)
	}
	if err := w.q.onInterrupt(func(id string) { w.engine.Interrupt(id) }); err != nil {
		return err
	}
	bg, stopBG := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for bg.Err() == nil {
			sub := w.engine.Subscribe()
			stop := context.AfterFunc(bg, sub.Close)
			w.forward(sub)
			stop()
			sub.Close()
		}
	}()
	go func() {
		defer wg.Done()
		w.maintain(bg)
	}()
	err := w.engine.Run(ctx)
	// The engine's last events (a handed-back prompt's) are out before Run returns.
	stopBG()
	wg.Wait()
	c, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	w.q.peers.withdraw(c)
	cancel()
	return err
}

func (w *Worker) advertise(ctx context.Context) error {
	a := Advert{Device: w.o.Device, Running: w.engine.Running()}
	if w.o.Models != nil {
		a.Models = w.o.Models()
		if a.Models == nil {
			a.Models = []string{}
		}
	}
	if w.o.Loaded != nil {
		a.Loaded = w.o.Loaded()
	}
	if w.o.FreeMemory != nil {
		a.FreeMemory = w.o.FreeMemory()
	}
	c, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return w.q.peers.advertise(c, a)
}

// maintain refreshes the advert, gives queued prompts without a token one, and
// clears old delete markers from the queue bucket.
func (w *Worker) maintain(ctx context.Context) {
	adv := time.NewTicker(AdvertInterval)
	defer adv.Stop()
	rec := time.NewTicker(w.q.opts.LeaseTimeout)
	defer rec.Stop()
	purge := time.NewTicker(10 * time.Minute)
	defer purge.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-adv.C:
			if err := w.advertise(ctx); err != nil && ctx.Err() == nil {
				w.q.log.Warn("refresh worker advert", "err", err)
			}
		case <-rec.C:
			c, cancel := context.WithTimeout(ctx, 10*time.Second)
			if err := w.q.reconcile(c); err != nil && ctx.Err() == nil {
				w.q.log.Warn("reconcile lease tokens", "err", err)
			}
			cancel()
		case <-purge.C:
			c, cancel := context.WithTimeout(ctx, 10*time.Second)
			if err := w.q.kv.PurgeDeletes(c, jetstream.DeleteMarkersOlderThan(time.Hour)); err != nil && ctx.Err() == nil {
				w.q.log.Warn("purge delete markers", "err", err)
			}
			cancel()
		}
	}
}

// forward publishes the engine's events to the cluster. Each event of a prompt this
// worker holds counts as progress (heartbeats go on); the files an executed event
// names are uploaded before the event leaves, and its output renamed as every front
// serves it. Events of a prompt whose lease was lost are dropped: the run that
// counts is another worker's.
func (w *Worker) forward(sub *executor.Subscription) {
	ctx := w.q.ctx
	for ev := range sub.C {
		id := promptOf(ev)
		if id != "" && w.wasLost(id) {
			continue
		}
		h := w.q.holding(id)
		if h != nil {
			h.touch()
		}
		if d, ok := ev.Data.(executor.ExecutedData); ok && w.q.outputs != nil {
			var out map[string]any
			var err error
			if h != nil {
				out, err = w.q.publishUI(ctx, h, d.Output)
			} else {
				var v any
				v, _, err = w.q.rewriteUI(d.Output)
				out, _ = v.(map[string]any)
			}
			if err != nil {
				w.q.log.Warn("publish outputs of a node", "prompt_id", id, "node", d.Node, "err", err)
			} else {
				d.Output = out
				ev.Data = d
			}
		}
		if err := w.q.PublishEvent(ev); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			w.q.log.Debug("publish event", "type", ev.Type, "err", err)
		}
	}
	if sub.Overflowed() {
		w.q.log.Warn("event forwarding fell behind; events were dropped", "dropped", sub.Dropped())
	}
}

func (w *Worker) markLost(id string) {
	w.lostMu.Lock()
	defer w.lostMu.Unlock()
	w.lost = append(w.lost, id)
	if len(w.lost) > 64 {
		w.lost = w.lost[len(w.lost)-64:]
	}
}

func (w *Worker) wasLost(id string) bool {
	w.lostMu.Lock()
	defer w.lostMu.Unlock()
	for _, l := range w.lost {
		if l == id {
			return true
		}
	}
	return false
}
