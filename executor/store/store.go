package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/forgeflow/forgeflow/executor"
	"github.com/forgeflow/forgeflow/graph"
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
	// CheckMaxSize: Open runs bbolt's own consistency check (which reads every page,
	// linear in the file) on files up to this size, so that the check stays bounded
	// in time; bigger files get only the page walk of checkFile. 0 means
	// DefaultCheckMaxSize; negative turns bbolt's check off.
	CheckMaxSize int64
	Logger       *slog.Logger

	// noSync skips fsync (the fuzz test, which is about reading damaged files).
	noSync bool
}

// DefaultCheckMaxSize is Options.CheckMaxSize's default: 1 GiB. A queue file holds
// at most MaxHistory entries and the queue, usually a few megabytes.
const DefaultCheckMaxSize = 1 << 30

// Store is the bbolt implementation of executor.Queue, whose contract it follows. It is
// safe for concurrent use.
type Store struct {
	db         *bolt.DB
	path       string
	maxHistory int
	log        *slog.Logger

	mu     sync.Mutex
	wake   chan struct{} // closed and replaced when a job becomes pending
	closed chan struct{}
	once   sync.Once

	// broken is set by a panic from the file's content (guardCall).
	broken atomic.Pointer[error]
	// reported holds the damaged records already logged (bucket NUL key).
	repMu    sync.Mutex
	reported map[string]bool
}

// Open opens (creating if needed) the store at path and recovers prompts that were
// running when the process last stopped, as Options.MaxAttempts describes.
//
// A damaged file never stops the server for good, nor crashes it: Open checks the
// file first (repair.go) and, when it is damaged, copies what can be read into a fresh
// file, keeps the damaged one beside it and logs both names; a file that is not a
// queue database at all is refused with ErrNotQueue. Once open, a record that does
// not decode is skipped and reported once (see reportDamaged), and a panic from the
// file's content fails the one call, never the process.
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
	if opts.CheckMaxSize == 0 {
		opts.CheckMaxSize = DefaultCheckMaxSize
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if err := checkAndRepair(path, opts); err != nil {
		return nil, openErr(path, err)
	}
	db, err := openBolt(path, opts)
	if err != nil {
		return nil, openErr(path, err)
	}
	if st, err := os.Stat(path); err == nil && st.Size() <= opts.CheckMaxSize {
		if d := boltCheck(db); d.found() {
			db.Close()
			if err := repair(path, d, opts); err != nil {
				return nil, openErr(path, err)
			}
			if db, err = openBolt(path, opts); err != nil {
				return nil, openErr(path, err)
			}
		}
	}
	s := &Store{
		db:         db,
		path:       path,
		maxHistory: opts.MaxHistory,
		log:        opts.Logger,
		wake:       make(chan struct{}),
		closed:     make(chan struct{}),
		reported:   map[string]bool{},
	}
	err = s.update(context.Background(), func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketPending, bucketPendingIDs, bucketRunning, bucketHistory, bucketHistoryIDs} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return s.recover(tx, opts.MaxAttempts)
	})
	if err != nil {
		db.Close()
		return nil, openErr(path, err)
	}
	return s, nil
}

// openErr says which file failed and, for a file that is not a queue, the way out.
func openErr(path string, err error) error {
	if errors.Is(err, ErrNotQueue) {
		return fmt.Errorf("store: open %s: %w: move the file away (an empty queue and history are then created there) or use another file", path, err)
	}
	return fmt.Errorf("store: open %s: %w", path, err)
}

// openBolt opens the file with bbolt, turning a panic or memory fault on bad content
// into an error.
func openBolt(path string, opts Options) (db *bolt.DB, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer guard(&err)
	db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.Timeout, NoSync: opts.noSync})
	if errors.Is(err, berrors.ErrTimeout) {
		err = errInUse
	}
	return db, err
}

// guard turns a panic (or a memory fault, which SetPanicOnFault makes a panic) from
// bbolt reading a damaged file into *err. Defer it first thing.
func guard(err *error) {
	if v := recover(); v != nil {
		*err = fmt.Errorf("%w: %v", errDamaged, v)
	}
}

// errDamaged wraps a panic from the file's content.
var errDamaged = errors.New("the queue database is damaged")

// recover moves jobs left running by a dead process back to pending, or into the
// history as errors when they have used up their attempts; a running record that does
// not decode goes to the history as an error too.
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
		rec, err := executor.DecodeJobRecord(run.Get(id))
		if err != nil {
			if err := run.Delete(id); err != nil {
				return err
			}
			if err := s.retireDamaged(tx, "running", string(id), err); err != nil {
				return err
			}
			continue
		}
		if err := run.Delete(id); err != nil {
			return err
		}
		if rec.Attempts >= maxAttempts {
			s.log.Warn("prompt crashed the process too often; recorded as failed", "prompt_id", rec.Job.ID, "attempts", rec.Attempts)
			entry := crashedEntry(rec)
			if err := s.putHistory(tx, entry); err != nil {
				return err
			}
			continue
		}
		s.log.Info("prompt was running when the process stopped; queued again", "prompt_id", rec.Job.ID)
		if err := putPending(tx, rec); err != nil {
			return err
		}
	}
	return nil
}

// ExceptionDamagedRecord is the exception_type of the history entry of a prompt whose
// stored record could not be read.
const ExceptionDamagedRecord = "DamagedRecord"

// retireDamaged reports a job record that does not decode and, when its prompt id is
// known and valid, records an error history entry for it, so the prompt's client
// learns it is lost.
func (s *Store) retireDamaged(tx *bolt.Tx, bucket, id string, err error) error {
	s.reportDamaged(bucket, id, err)
	if id == "" || len(id) > executor.MaxIDLength {
		return nil
	}
	job := &executor.Job{ID: id, Prompt: graph.Prompt{}}
	return s.putHistory(tx, executor.ErrorEntry(job, ExceptionDamagedRecord,
		"the stored prompt was damaged and could not be read: "+err.Error(), time.Now()))
}

// reportDamaged logs a record that does not decode, once per record.
func (s *Store) reportDamaged(bucket, key string, err error) {
	s.repMu.Lock()
	first := !s.reported[bucket+"\x00"+key]
	if first && len(s.reported) < maxReported {
		s.reported[bucket+"\x00"+key] = true
	}
	s.repMu.Unlock()
	if first {
		s.log.Warn("damaged record in the queue database skipped", "file", s.path, "bucket", bucket, "key", fmt.Sprintf("%q", key), "err", err)
	}
}

// maxReported bounds the damaged records remembered as reported.
const maxReported = 10000

// crashedEntry is the history entry of a prompt that was running whenever the process
// died, MaxAttempts times.
func crashedEntry(rec *executor.JobRecord) *executor.HistoryEntry {
	msg := fmt.Sprintf("the process stopped while this prompt was running (%d attempts)", rec.Attempts)
	return executor.ErrorEntry(&rec.Job, executor.ExceptionProcessStopped, msg, time.Now())
}

// Close closes the file. Jobs leased and not acked or failed stay running in the file,
// so the next Open treats them as interrupted by a crash. A blocked Lease returns
// executor.ErrClosed.
func (s *Store) Close() error {
	var err error
	s.once.Do(func() {
		close(s.closed)
		if s.brokenErr() == nil {
			err = s.db.Close()
			return
		}
		// After a panic inside bbolt its locks may be held: do not wait forever.
		done := make(chan error, 1)
		go func() { done <- s.db.Close() }()
		select {
		case err = <-done:
		case <-time.After(5 * time.Second):
			err = fmt.Errorf("store: close %s: %w", s.path, errDamaged)
		}
	})
	return err
}

// update runs fn in a read-write transaction, fsynced before it returns. A panic from
// the file's content fails this call; the store is then broken, and every later call
// says so (reopening the file checks and repairs it).
func (s *Store) update(ctx context.Context, fn func(tx *bolt.Tx) error) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.brokenErr(); err != nil {
		return err
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer s.guardCall(&err)
	return closedErr(s.db.Update(fn))
}

// view runs fn in a read-only transaction, guarded as update is.
func (s *Store) view(ctx context.Context, fn func(tx *bolt.Tx) error) (err error) {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.brokenErr(); err != nil {
		return err
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer s.guardCall(&err)
	return closedErr(s.db.View(fn))
}

// guardCall makes a memory fault on the file's map a panic for this call, and turns
// a panic into an error that breaks the store.
func (s *Store) guardCall(err *error) {
	if v := recover(); v != nil {
		e := fmt.Errorf("store: %s: %w: %v; restart forgeflow to check and repair it", s.path, errDamaged, v)
		s.broken.CompareAndSwap(nil, &e)
		s.log.Error("queue database failed", "file", s.path, "panic", fmt.Sprint(v))
		*err = e
	}
}

func (s *Store) brokenErr() error {
	if e := s.broken.Load(); e != nil {
		return *e
	}
	return nil
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
		item.Sensitive, item.Attempts = nil, 0
		rec := &executor.JobRecord{Job: item, Sensitive: job.Sensitive, Key: pendingKey(number, seq)}
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
			var last []byte
			for {
				k, v := tx.Bucket(bucketPending).Cursor().First()
				if k == nil {
					return nil
				}
				// A damaged page can keep a key that Delete does not find (its keys are
				// out of order): the same first key again means the bucket cannot shrink,
				// and the loop must end instead of spinning.
				if last != nil && bytes.Equal(k, last) {
					return fmt.Errorf("store: lease: %w: pending record %x cannot be removed; restart forgeflow to check and repair it", errDamaged, k)
				}
				last = bytes.Clone(k)
				rec, err := executor.DecodeJobRecord(v)
				if err != nil {
					// A damaged pending job leaves the queue (with an error entry
					// when its id is known) instead of blocking it.
					if err := s.dropDamagedPending(tx, bytes.Clone(k), err); err != nil {
						return err
					}
					continue
				}
				if err := deletePending(tx, last, rec.Job.ID); err != nil {
					return err
				}
				rec.Attempts++
				b, err := executor.EncodeJobRecord(rec)
				if err != nil {
					return err
				}
				if err := tx.Bucket(bucketRunning).Put([]byte(rec.Job.ID), b); err != nil {
					return err
				}
				j := rec.Job
				j.Sensitive = rec.Sensitive
				j.Attempts = rec.Attempts
				job = &j
				return nil
			}
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
		if err := run.Delete([]byte(id)); err != nil {
			return err
		}
		rec, err := executor.DecodeJobRecord(v)
		if err != nil {
			return s.retireDamaged(tx, "running", id, err)
		}
		// A hand-back is not the prompt's fault: it does not count as an attempt.
		rec.Attempts--
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
		// A record that does not decode is left out of the listing and reported.
		if err := tx.Bucket(bucketRunning).ForEach(func(k, v []byte) error {
			if rec, err := executor.DecodeJobRecord(v); err != nil {
				s.reportDamaged("running", string(k), err)
			} else {
				running = append(running, publicJob(rec))
			}
			return nil
		}); err != nil {
			return err
		}
		return tx.Bucket(bucketPending).ForEach(func(k, v []byte) error {
			if rec, err := executor.DecodeJobRecord(v); err != nil {
				s.reportDamaged("pending", fmt.Sprintf("%x", k), err)
			} else {
				pending = append(pending, publicJob(rec))
			}
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
func publicJob(rec *executor.JobRecord) *executor.Job {
	j := rec.Job
	j.Sensitive = nil
	j.Attempts = rec.Attempts
	return &j
}

func putPending(tx *bolt.Tx, rec *executor.JobRecord) error {
	b, err := executor.EncodeJobRecord(rec)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if err := tx.Bucket(bucketPending).Put(rec.Key, b); err != nil {
		return err
	}
	return tx.Bucket(bucketPendingIDs).Put([]byte(rec.Job.ID), rec.Key)
}

func deletePending(tx *bolt.Tx, key []byte, id string) error {
	if err := tx.Bucket(bucketPending).Delete(key); err != nil {
		return err
	}
	return tx.Bucket(bucketPendingIDs).Delete([]byte(id))
}

// dropDamagedPending removes the pending record at key k, which does not decode, and
// its index entry (found by a scan: its id is in the damaged record), retiring the
// prompt to the history as an error.
func (s *Store) dropDamagedPending(tx *bolt.Tx, k []byte, err error) error {
	if err := tx.Bucket(bucketPending).Delete(k); err != nil {
		return err
	}
	id, ierr := keyOwner(tx.Bucket(bucketPendingIDs), k)
	if ierr != nil {
		return ierr
	}
	if id != nil {
		if err := tx.Bucket(bucketPendingIDs).Delete(id); err != nil {
			return err
		}
	}
	return s.retireDamaged(tx, "pending", string(id), err)
}

// keyOwner returns the id whose index entry in ids points at key k, or nil.
func keyOwner(ids *bolt.Bucket, k []byte) ([]byte, error) {
	var owner []byte
	err := ids.ForEach(func(id, v []byte) error {
		if bytes.Equal(v, k) {
			owner = bytes.Clone(id)
		}
		return nil
	})
	return owner, err
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
