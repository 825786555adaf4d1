package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/forgeflow/forgeflow/executor"
)

// Bucket names. Keys of "pending" are sortable(number) ‖ seq so that a cursor walks the
// queue in lease order; "pending_ids" maps a prompt id to its pending key. "history"
// is keyed by insertion seq; "history_ids" maps a prompt id to its history key.
var (
	bucketMeta       = []byte("meta")
	bucketPending    = []byte("pending")
	bucketPendingIDs = []byte("pending_ids")
	bucketRunning    = []byte("running")
	bucketHistory    = []byte("history")
	bucketHistoryIDs = []byte("history_ids")

	keyCounter  = []byte("counter")   // ComfyUI's server.number, the next prompt number
	keySeq      = []byte("seq")       // insertion sequence for tie-breaks and history order
	keyHistoryN = []byte("history_n") // number of history entries
)

// Options configures Open. The zero value works.
type Options struct {
	// MaxHistory bounds the history; 0 means executor.DefaultMaxHistory.
	MaxHistory int
	// MaxAttempts: a prompt found running at Open (the process died during its run)
	// goes back to its slot in the queue, unless it was already leased MaxAttempts
	// times: then it is retired to the history as an error (see executor.Queue). 0
	// means executor.DefaultMaxAttempts.
	MaxAttempts int
	// Timeout is how long Open waits for the file lock (another process holding the
	// file); 0 means one second.
	Timeout time.Duration
	Logger  *slog.Logger
}

// Store is the bbolt implementation of executor.Queue, whose contract it follows. It is
// safe for concurrent use.
type Store struct {
	db         *bolt.DB
	maxHistory int
	log        *slog.Logger

	mu     sync.Mutex
	wake   chan struct{} // closed and replaced when a job becomes pending
	closed chan struct{}
	once   sync.Once
}

// record is how a job is stored: its queue item plus what the list form leaves out.
type record struct {
	Item      executor.Job   `json:"item"`
	Sensitive map[string]any `json:"sensitive,omitempty"`
	Attempts  int            `json:"attempts"`
	Key       []byte         `json:"key"` // the pending key, kept so Fail restores the slot
}

// Open opens (creating if needed) the store at path and recovers prompts that were
// running when the process last stopped, as Options.MaxAttempts describes.
func Open(path string, opts Options) (*Store, error) {
	if opts.MaxHistory <= 0 {
		opts.MaxHistory = executor.DefaultMaxHistory
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = executor.DefaultMaxAttempts
	}
	if opts.Timeout <= 0 {
		opts.Timeout = time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.Timeout})
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	s := &Store{
		db:         db,
		maxHistory: opts.MaxHistory,
		log:        opts.Logger,
		wake:       make(chan struct{}),
		closed:     make(chan struct{}),
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketPending, bucketPendingIDs, bucketRunning, bucketHistory, bucketHistoryIDs} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return s.recover(tx, opts.MaxAttempts)
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	return s, nil
}

// recover moves jobs left running by a dead process back to pending, or into the
// history as errors when they have used up their attempts.
func (s *Store) recover(tx *bolt.Tx, maxAttempts int) error {
	run := tx.Bucket(bucketRunning)
	var ids [][]byte
	if err := run.ForEach(func(k, _ []byte) error {
		ids = append(ids, bytes.Clone(k))
		return nil
	}); err != nil {
		return err
	}
	for _, id := range ids {
		rec, err := decodeRecord(run.Get(id))
		if err != nil {
			return fmt.Errorf("running prompt %q: %w", id, err)
		}
		if err := run.Delete(id); err != nil {
			return err
		}
		if rec.Attempts >= maxAttempts {
			s.log.Warn("prompt crashed the process too often; recorded as failed", "prompt_id", rec.Item.ID, "attempts", rec.Attempts)
			entry := crashedEntry(rec)
			if err := s.putHistory(tx, entry); err != nil {
				return err
			}
			continue
		}
		s.log.Info("prompt was running when the process stopped; queued again", "prompt_id", rec.Item.ID)
		if err := putPending(tx, rec); err != nil {
			return err
		}
	}
	return nil
}

// crashedEntry is the history entry of a prompt that was running whenever the process
// died, MaxAttempts times.
func crashedEntry(rec *record) *executor.HistoryEntry {
	msg := fmt.Sprintf("the process stopped while this prompt was running (%d attempts)", rec.Attempts)
	return executor.ErrorEntry(&rec.Item, executor.ExceptionProcessStopped, msg, time.Now())
}

// Close closes the file. Jobs leased and not acked or failed stay running in the file,
// so the next Open treats them as interrupted by a crash. A blocked Lease returns
// executor.ErrClosed.
func (s *Store) Close() error {
	var err error
	s.once.Do(func() {
		close(s.closed)
		err = s.db.Close()
	})
	return err
}

// update runs fn in a read-write transaction, fsynced before it returns.
func (s *Store) update(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return closedErr(s.db.Update(fn))
}

// view runs fn in a read-only transaction.
func (s *Store) view(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return closedErr(s.db.View(fn))
}

// closedErr reports bbolt's closed-database error as executor.ErrClosed.
func closedErr(err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return fmt.Errorf("store: %w", executor.ErrClosed)
	}
	return err
}

func (s *Store) notify() {
	s.mu.Lock()
	close(s.wake)
	s.wake = make(chan struct{})
	s.mu.Unlock()
}

// Push implements executor.Queue.
func (s *Store) Push(ctx context.Context, job *executor.Job, opts executor.PushOptions) (float64, error) {
	if job == nil || job.ID == "" {
		return 0, errors.New("store: push: empty prompt id")
	}
	if len(job.ID) > executor.MaxIDLength {
		return 0, fmt.Errorf("store: push: %d-byte prompt id: %w", len(job.ID), executor.ErrInvalidID)
	}
	if opts.Number != nil && (math.IsNaN(*opts.Number) || math.IsInf(*opts.Number, 0)) {
		return 0, fmt.Errorf("store: push %q: number is not finite", job.ID)
	}
	var number float64
	err := s.update(ctx, func(tx *bolt.Tx) error {
		id := []byte(job.ID)
		if tx.Bucket(bucketPendingIDs).Get(id) != nil || tx.Bucket(bucketRunning).Get(id) != nil {
			return fmt.Errorf("store: push %q: %w", job.ID, executor.ErrDuplicate)
		}
		meta := tx.Bucket(bucketMeta)
		switch {
		case opts.Number != nil:
			// ComfyUI uses a client-given number as is and leaves its counter alone.
			number = *opts.Number
		default:
			n := getUint(meta, keyCounter)
			// ComfyUI's post_prompt: number = server.number, negated for front.
			number = float64(int64(n))
			if opts.Front && n != 0 {
				number = -number
			}
			if err := putUint(meta, keyCounter, n+1); err != nil {
				return err
			}
		}
		seq := getUint(meta, keySeq)
		if err := putUint(meta, keySeq, seq+1); err != nil {
			return err
		}
		item := *job
		item.Number = number
		item.Sensitive = nil
		rec := &record{Item: item, Sensitive: job.Sensitive, Key: pendingKey(number, seq)}
		return putPending(tx, rec)
	})
	if err != nil {
		return 0, err
	}
	job.Number = number
	s.notify()
	return number, nil
}

// Lease implements executor.Queue.
func (s *Store) Lease(ctx context.Context) (*executor.Job, error) {
	for {
		s.mu.Lock()
		wake := s.wake
		s.mu.Unlock()
		var job *executor.Job
		err := s.update(ctx, func(tx *bolt.Tx) error {
			k, v := tx.Bucket(bucketPending).Cursor().First()
			if k == nil {
				return nil
			}
			rec, err := decodeRecord(v)
			if err != nil {
				return fmt.Errorf("store: lease: pending %x: %w", k, err)
			}
			if err := deletePending(tx, rec); err != nil {
				return err
			}
			rec.Attempts++
			b, err := json.Marshal(rec)
			if err != nil {
				return err
			}
			if err := tx.Bucket(bucketRunning).Put([]byte(rec.Item.ID), b); err != nil {
				return err
			}
			j := rec.Item
			j.Sensitive = rec.Sensitive
			j.Attempts = rec.Attempts
			job = &j
			return nil
		})
		if err != nil {
			return nil, err
		}
		if job != nil {
			return job, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-s.closed:
			return nil, executor.ErrClosed
		case <-wake:
		}
	}
}

// Ack implements executor.Queue.
func (s *Store) Ack(ctx context.Context, id string, entry *executor.HistoryEntry) error {
	return s.update(ctx, func(tx *bolt.Tx) error {
		run := tx.Bucket(bucketRunning)
		if run.Get([]byte(id)) == nil {
			return fmt.Errorf("store: ack %q: %w", id, executor.ErrNotLeased)
		}
		if entry == nil || entry.Prompt.ID != id {
			return fmt.Errorf("store: ack %q: the history entry is not that prompt's", id)
		}
		if err := run.Delete([]byte(id)); err != nil {
			return err
		}
		return s.putHistory(tx, entry)
	})
}

// Fail implements executor.Queue.
func (s *Store) Fail(ctx context.Context, id string) error {
	err := s.update(ctx, func(tx *bolt.Tx) error {
		run := tx.Bucket(bucketRunning)
		v := run.Get([]byte(id))
		if v == nil {
			return fmt.Errorf("store: fail %q: %w", id, executor.ErrNotLeased)
		}
		rec, err := decodeRecord(v)
		if err != nil {
			return fmt.Errorf("store: fail %q: %w", id, err)
		}
		// A hand-back is not the prompt's fault: it does not count as an attempt.
		rec.Attempts--
		if err := run.Delete([]byte(id)); err != nil {
			return err
		}
		return putPending(tx, rec)
	})
	if err == nil {
		s.notify()
	}
	return err
}

// Delete implements executor.Queue.
func (s *Store) Delete(ctx context.Context, ids ...string) (int, error) {
	n := 0
	err := s.update(ctx, func(tx *bolt.Tx) error {
		n = 0
		for _, id := range ids {
			k := tx.Bucket(bucketPendingIDs).Get([]byte(id))
			if k == nil {
				continue
			}
			if err := tx.Bucket(bucketPending).Delete(bytes.Clone(k)); err != nil {
				return err
			}
			if err := tx.Bucket(bucketPendingIDs).Delete([]byte(id)); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return n, err
}

// Clear implements executor.Queue.
func (s *Store) Clear(ctx context.Context) error {
	return s.update(ctx, func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketPending, bucketPendingIDs} {
			if err := tx.DeleteBucket(b); err != nil {
				return err
			}
			if _, err := tx.CreateBucket(b); err != nil {
				return err
			}
		}
		return nil
	})
}

// List implements executor.Queue.
func (s *Store) List(ctx context.Context) (running, pending []*executor.Job, err error) {
	err = s.view(ctx, func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketRunning).ForEach(func(k, v []byte) error {
			rec, err := decodeRecord(v)
			if err != nil {
				return fmt.Errorf("store: list: running %q: %w", k, err)
			}
			running = append(running, publicJob(rec))
			return nil
		}); err != nil {
			return err
		}
		return tx.Bucket(bucketPending).ForEach(func(k, v []byte) error {
			rec, err := decodeRecord(v)
			if err != nil {
				return fmt.Errorf("store: list: pending %x: %w", k, err)
			}
			pending = append(pending, publicJob(rec))
			return nil
		})
	})
	return running, pending, err
}

// Remaining implements executor.Queue.
func (s *Store) Remaining(ctx context.Context) (int, error) {
	n := 0
	err := s.view(ctx, func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketPendingIDs).Stats().KeyN + tx.Bucket(bucketRunning).Stats().KeyN
		return nil
	})
	return n, err
}

// publicJob is the job as listings show it: without its sensitive data.
func publicJob(rec *record) *executor.Job {
	j := rec.Item
	j.Sensitive = nil
	j.Attempts = rec.Attempts
	return &j
}

func putPending(tx *bolt.Tx, rec *record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("store: encode prompt %q: %w", rec.Item.ID, err)
	}
	if err := tx.Bucket(bucketPending).Put(rec.Key, b); err != nil {
		return err
	}
	return tx.Bucket(bucketPendingIDs).Put([]byte(rec.Item.ID), rec.Key)
}

func deletePending(tx *bolt.Tx, rec *record) error {
	if err := tx.Bucket(bucketPending).Delete(rec.Key); err != nil {
		return err
	}
	return tx.Bucket(bucketPendingIDs).Delete([]byte(rec.Item.ID))
}

func decodeRecord(b []byte) (*record, error) {
	var rec record
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(&rec); err != nil {
		return nil, err
	}
	return &rec, nil
}

// pendingKey orders pending jobs by number, then by push order: the float's bits are
// mapped so that byte order equals numeric order (sign bit flipped for positives, all
// bits flipped for negatives).
func pendingKey(number float64, seq uint64) []byte {
	bits := math.Float64bits(number)
	if number == 0 {
		bits = 0 // -0 and +0 are the same number
	}
	if bits&(1<<63) != 0 {
		bits = ^bits
	} else {
		bits |= 1 << 63
	}
	k := make([]byte, 16)
	binary.BigEndian.PutUint64(k, bits)
	binary.BigEndian.PutUint64(k[8:], seq)
	return k
}

func getUint(b *bolt.Bucket, k []byte) uint64 {
	v := b.Get(k)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func putUint(b *bolt.Bucket, k []byte, n uint64) error {
	v := make([]byte, 8)
	binary.BigEndian.PutUint64(v, n)
	return b.Put(k, v)
}
