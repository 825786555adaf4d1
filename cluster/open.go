package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/forgeflow/forgeflow/executor"
)

// Connect dials the NATS servers in urls (comma-separated nats:// URLs), retrying
// the first connection for up to a minute and reconnecting forever afterwards.
func Connect(urls, name string, log *slog.Logger) (*nats.Conn, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	nc, err := nats.Connect(urls,
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(100*time.Millisecond),
		nats.ReconnectJitter(50*time.Millisecond, 50*time.Millisecond),
		nats.RetryOnFailedConnect(false),
		nats.Timeout(5*time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info("nats reconnected", "server", c.ConnectedUrlRedacted()) }),
	)
	if err != nil {
		return nil, fmt.Errorf("cluster: connect %s: %w", urls, err)
	}
	return nc, nil
}

// Open connects to urls and opens the queue (see OpenConn); Close closes the
// connection too.
func Open(ctx context.Context, urls string, opts Options) (*Queue, error) {
	nc, err := Connect(urls, opts.Name, opts.Logger)
	if err != nil {
		return nil, err
	}
	q, err := OpenConn(ctx, nc, opts)
	if err != nil {
		nc.Close()
		return nil, err
	}
	q.ownNC = true
	return q, nil
}

// OpenConn opens the queue on an existing connection, creating the streams, buckets
// and consumer when they are missing, loads the queue's state and takes back the
// leases this process's Name held before a restart (their jobs are pending again in
// their slots, or retired after MaxAttempts).
func OpenConn(ctx context.Context, nc *nats.Conn, opts Options) (*Queue, error) {
	if opts.Name == "" {
		return nil, errors.New("cluster: open: no process name")
	}
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = executor.DefaultMaxAttempts
	}
	if opts.MaxHistory <= 0 {
		opts.MaxHistory = executor.DefaultMaxHistory
	}
	leaseSet := opts.LeaseTimeout > 0
	if !leaseSet {
		opts.LeaseTimeout = DefaultLeaseTimeout
	}
	if opts.HangTimeout == 0 {
		opts.HangTimeout = DefaultHangTimeout
	}
	if opts.RetryFor <= 0 {
		opts.RetryFor = time.Minute
	}
	if opts.Requires == nil {
		opts.Requires = Requires
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Replicas <= 0 {
		opts.Replicas = 1
		if len(nc.Servers()) >= 3 {
			opts.Replicas = 3
		}
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("cluster: open: %w", err)
	}
	q := &Queue{opts: opts, log: opts.Logger.With("process", opts.Name), nc: nc, js: js, names: namesFor(opts.Prefix), held: map[string]*held{}}
	q.idx = newIndex(q.log)
	q.ctx, q.cancel = context.WithCancel(context.Background())
	if err := q.setup(ctx, leaseSet); err != nil {
		q.cancel()
		return nil, err
	}
	if err := q.startWatch(ctx); err != nil {
		q.cancel()
		return nil, err
	}
	q.peers = newPeers(q)
	if err := q.peers.start(ctx); err != nil {
		q.Close()
		return nil, err
	}
	for _, e := range q.idx.leasedBy(opts.Name) {
		q.log.Info("prompt was running when this process last stopped; its lease is given up", "prompt_id", e.id)
		q.expire(ctx, e.id, e.rec.Job.Lease.Token)
		_ = nc.Publish(e.rec.Job.Lease.Reply, []byte("-NAK"))
	}
	return q, nil
}

// setup creates (or opens) the buckets, stream, consumer and object store. A cluster
// that is still forming (no meta leader yet, peers not yet known to be online for an
// R3 placement) refuses for a moment: setup tries again for up to a minute.
func (q *Queue) setup(ctx context.Context, leaseSet bool) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		err := q.setupOnce(ctx, leaseSet)
		if err == nil || ctx.Err() != nil {
			return err
		}
		q.log.Info("waiting for jetstream", "err", err)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (q *Queue) setupOnce(ctx context.Context, leaseSet bool) error {
	r := q.opts.Replicas
	var err error
	q.kv, err = keyValue(ctx, q.js, jetstream.KeyValueConfig{Bucket: q.names.queueKV, History: 1, Replicas: r, Storage: jetstream.FileStorage,
		Description: "forgeflow queue and history: one key per prompt id"})
	if err != nil {
		return fmt.Errorf("cluster: open %s: %w", q.names.queueKV, err)
	}
	if q.kv, err = leaderReads(ctx, q.js, q.kv); err != nil {
		return fmt.Errorf("cluster: open %s: %w", q.names.queueKV, err)
	}
	if _, err := q.js.CreateStream(ctx, jetstream.StreamConfig{Name: q.names.tokens, Subjects: []string{q.names.tokenSubject},
		Retention: jetstream.WorkQueuePolicy, Replicas: r, Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute,
		Description: "forgeflow lease tokens: one per queued prompt"}); err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return fmt.Errorf("cluster: open %s: %w", q.names.tokens, err)
	}
	cfg := jetstream.ConsumerConfig{Durable: q.names.consumer, AckPolicy: jetstream.AckExplicitPolicy, AckWait: q.opts.LeaseTimeout,
		MaxDeliver: -1, MaxAckPending: -1, Replicas: r, Description: "forgeflow workers: a delivered token is a lease"}
	q.cons, err = q.js.Consumer(ctx, q.names.tokens, q.names.consumer)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		q.cons, err = q.js.CreateOrUpdateConsumer(ctx, q.names.tokens, cfg)
	case err == nil && leaseSet && q.cons.CachedInfo().Config.AckWait != q.opts.LeaseTimeout:
		q.cons, err = q.js.CreateOrUpdateConsumer(ctx, q.names.tokens, cfg)
	}
	if err != nil {
		return fmt.Errorf("cluster: open consumer %s: %w", q.names.consumer, err)
	}
	q.objs, err = q.js.ObjectStore(ctx, q.names.outputs)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		q.objs, err = q.js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: q.names.outputs, Replicas: r, Storage: jetstream.FileStorage,
			Description: "forgeflow output files of finished prompts"})
		if errors.Is(err, jetstream.ErrBucketExists) {
			q.objs, err = q.js.ObjectStore(ctx, q.names.outputs)
		}
	}
	if err != nil {
		return fmt.Errorf("cluster: open %s: %w", q.names.outputs, err)
	}
	q.inputs, err = q.js.ObjectStore(ctx, q.names.inputs)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		q.inputs, err = q.js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: q.names.inputs, Replicas: r, Storage: jetstream.FileStorage,
			TTL: inputsMaxAge, Description: "forgeflow input files of queued prompts, named by SHA-256"})
		if errors.Is(err, jetstream.ErrBucketExists) {
			q.inputs, err = q.js.ObjectStore(ctx, q.names.inputs)
		}
	}
	if err != nil {
		return fmt.Errorf("cluster: open %s: %w", q.names.inputs, err)
	}
	q.workersKV, err = keyValue(ctx, q.js, jetstream.KeyValueConfig{Bucket: q.names.workersKV, History: 1, TTL: time.Minute,
		Replicas: r, Storage: jetstream.FileStorage, Description: "forgeflow workers: models, device, memory"})
	if err != nil {
		return fmt.Errorf("cluster: open %s: %w", q.names.workersKV, err)
	}
	return nil
}

// keyValue opens a bucket, creating it when missing.
func keyValue(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, cfg)
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, cfg.Bucket)
		}
	}
	return kv, err
}

// leaderReads turns off direct gets on a bucket's stream, so that every Get is
// answered by the stream leader: a follower may answer with a value a
// compare-and-set has already replaced, and a worker would retry against it.
func leaderReads(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue) (jetstream.KeyValue, error) {
	st, err := js.Stream(ctx, "KV_"+kv.Bucket())
	if err != nil {
		return nil, err
	}
	cfg := st.CachedInfo().Config
	if !cfg.AllowDirect {
		return kv, nil
	}
	cfg.AllowDirect = false
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		return nil, err
	}
	return js.KeyValue(ctx, kv.Bucket())
}

// startWatch loads the bucket into the index and keeps it current.
func (q *Queue) startWatch(ctx context.Context) error {
	w, err := q.kv.WatchAll(q.ctx)
	if err != nil {
		return fmt.Errorf("cluster: watch %s: %w", q.names.queueKV, err)
	}
	loaded := make(chan struct{})
	q.wg.Add(1)
	go func() {
		defer q.wg.Done()
		defer w.Stop()
		initial := true
		for {
			select {
			case <-q.ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil {
					if initial {
						initial = false
						close(loaded)
					}
					continue
				}
				q.applyEntry(e)
				q.idx.watchedUpTo(e.Revision())
			}
		}
	}()
	select {
	case <-loaded:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Minute):
		return fmt.Errorf("cluster: watch %s: initial load did not finish in a minute", q.names.queueKV)
	}
}

// applyEntry puts one watched or read entry into the index.
func (q *Queue) applyEntry(e jetstream.KeyValueEntry) {
	id, ok := keyID(e.Key())
	if !ok {
		return
	}
	if e.Operation() != jetstream.KeyValuePut {
		q.idx.apply(id, e.Revision(), nil)
		return
	}
	rec, err := decodeRecord(e.Value())
	if err != nil {
		q.idx.damagedRecord(id, e.Key(), e.Revision(), err)
		return
	}
	q.idx.apply(id, e.Revision(), rec)
}

// sync waits until the index has every write the cluster acknowledged before the
// call, so that a read on one serve front sees a prompt another front just accepted.
// A cluster that cannot answer leaves the index as it is (reads then show what this
// process knows) rather than fail the read.
func (q *Queue) sync(ctx context.Context) {
	c, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := q.kv.Status(c)
	if err != nil {
		q.log.Debug("queue status for a read", "err", err)
		return
	}
	ks, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok {
		return
	}
	if err := q.idx.waitWatched(c, ks.StreamInfo().State.LastSeq); err != nil {
		q.log.Debug("queue read before the watch caught up", "err", err)
	}
}

// Close stops the queue. Leases still held are not handed back: to the cluster the
// process died, and the jobs run again (see executor.Queue). A connection Open made
// is closed.
func (q *Queue) Close() error {
	q.once.Do(func() {
		q.cancel()
		q.heldMu.Lock()
		for id, h := range q.held {
			h.stop()
			delete(q.held, id)
		}
		q.heldMu.Unlock()
		q.wg.Wait()
		if q.ownNC {
			q.nc.Close()
		}
	})
	return nil
}

// live returns ErrClosed once the queue is closed.
func (q *Queue) live() error {
	if q.ctx.Err() != nil {
		return fmt.Errorf("cluster: %w", executor.ErrClosed)
	}
	return nil
}
