package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/forgeflow/forgeflow/executor"
	"github.com/forgeflow/forgeflow/graph"
)

// logLines records log lines as text.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, strings.TrimSpace(string(p)))
	return len(p), nil
}

func (l *logLines) count(sub string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.lines {
		if strings.Contains(s, sub) {
			n++
		}
	}
	return n
}

func (l *logLines) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

// bigJob is a job whose prompt is a few KB, so that a history of them spans many pages.
func bigJob(id string) *executor.Job {
	j := job(id)
	j.Prompt["1"].Inputs["text"] = strings.Repeat("lorem ipsum "+id+" ", 120)
	return j
}

// populated writes a store with pending jobs, one job left running (the process
// "died") and a history of n entries, and returns its path.
func populated(t *testing.T, n int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "queue.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := 0; i < n; i++ {
		j := bigJob(fmt.Sprintf("h%03d", i))
		if _, err := s.Push(ctx, j, executor.PushOptions{}); err != nil {
			t.Fatal(err)
		}
		l, err := s.Lease(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Ack(ctx, l.ID, entry(l, executor.StatusSuccess)); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"run", "p1", "p2", "p3"} {
		if _, err := s.Push(ctx, bigJob(id), executor.PushOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if l, err := s.Lease(ctx); err != nil || l.ID != "run" {
		t.Fatalf("lease %v %v", l, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// historyPage finds a leaf page of the history bucket in the file's live tree.
func historyPage(t *testing.T, path string) (id uint64, pageSize int64, entries int) {
	t.Helper()
	b, err := openBoltFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer b.close()
	w := &walker{b: b, visited: map[uint64]bool{0: true, 1: true}, visit: func([]string, []byte, []byte) {}, problem: func(p []string, err error) { t.Fatal(err) }}
	w.tree(nil, b.meta.root, 0)
	for pid := range w.visited {
		p, err := b.readPage(pid)
		if err != nil || p.flags != flagLeaf {
			continue
		}
		n := 0
		w2 := &walker{b: b, visited: map[uint64]bool{}, visit: func(path []string, k, v []byte) {
			if _, err := executor.DecodeHistoryEntry(v); err == nil && len(k) == 8 && len(path) == 0 {
				n++ // an entry on this page, not in a bucket under it
			}
		}, problem: func([]string, error) {}}
		w2.leaf(nil, p.data, "", 0)
		if n > 0 {
			return pid, int64(b.meta.pageSize), n
		}
	}
	t.Fatal("no history leaf page")
	return 0, 0, 0
}

// reopen opens the damaged file and checks that the store then works: a prompt
// queued, leased and acked (which, on a file with a garbage page, used to panic), the
// queue and history listed, and the file opened once more (no crash loop).
func reopen(t *testing.T, path string, log *logLines) (*Store, []*executor.HistoryEntry) {
	t.Helper()
	s, err := Open(path, Options{Logger: log.logger()})
	if err != nil {
		t.Fatalf("open of the damaged file: %v", err)
	}
	ctx := context.Background()
	hist, err := s.ListHistory(ctx, -1, -1)
	if err != nil {
		t.Fatalf("history of the damaged file: %v", err)
	}
	if _, _, err := s.List(ctx); err != nil {
		t.Fatalf("queue of the damaged file: %v", err)
	}
	if _, err := s.Push(ctx, job("after"), executor.PushOptions{Front: true}); err != nil {
		t.Fatal(err)
	}
	for {
		l, err := s.Lease(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Ack(ctx, l.ID, entry(l, executor.StatusSuccess)); err != nil {
			t.Fatal(err)
		}
		if l.ID == "after" {
			break
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path, Options{Logger: log.logger()})
	if err != nil {
		t.Fatalf("second open: %v", err)
	}
	if e, err := s.GetHistory(ctx, "after"); err != nil || e.Status.StatusStr != executor.StatusSuccess {
		t.Fatalf("history after the repair: %v %v", e, err)
	}
	return s, hist
}

func damagedCopies(t *testing.T, path string) []string {
	t.Helper()
	m, _ := filepath.Glob(path + ".damaged-*")
	return m
}

// TestDamagedFiles opens real damaged files: each opens (repaired when the damage is
// structural, with the damaged file kept beside and named in the log), keeps what is
// readable, and works afterwards.
func TestDamagedFiles(t *testing.T) {
	const n = 120
	t.Run("truncated to half", func(t *testing.T) {
		path := populated(t, n)
		st, _ := os.Stat(path)
		if err := os.Truncate(path, st.Size()/2); err != nil {
			t.Fatal(err)
		}
		log := &logLines{}
		s, _ := reopen(t, path, log)
		defer s.Close()
		copies := damagedCopies(t, path)
		if len(copies) != 1 || log.count("queue database was damaged") != 1 || log.count(copies[0]) != 1 || log.count("cut short") != 1 {
			t.Fatalf("damaged copies %v, log %v", copies, log.lines)
		}
		if cst, _ := os.Stat(copies[0]); cst.Size() != st.Size()/2 {
			t.Errorf("the damaged copy is %d bytes, want the %d of the damaged file", cst.Size(), st.Size()/2)
		}
	})
	t.Run("garbage data page", func(t *testing.T) {
		path := populated(t, n)
		pid, ps, lost := historyPage(t, path)
		garbage := make([]byte, ps)
		rng := rand.New(rand.NewPCG(1, 2))
		for i := range garbage {
			garbage[i] = byte(rng.Uint32())
		}
		writeAt(t, path, garbage, int64(pid)*ps)
		log := &logLines{}
		s, hist := reopen(t, path, log)
		defer s.Close()
		if log.count("queue database was damaged") != 1 || len(damagedCopies(t, path)) != 1 {
			t.Fatalf("log %v", log.lines)
		}
		// Everything but the entries of the garbage page is kept, and the pending
		// jobs and the one that was running (queued again), in their order.
		if len(hist) != n-lost {
			t.Errorf("%d history entries kept of %d, %d were on the garbage page", len(hist), n, lost)
		}
		_, pending, _ := s.List(context.Background())
		var ids []string
		for _, j := range pending {
			ids = append(ids, j.ID)
		}
		if fmt.Sprint(ids) != "[run p1 p2 p3]" {
			t.Errorf("pending after the repair: %v", ids)
		}
	})
	t.Run("16 flipped bytes in a record", func(t *testing.T) {
		path := populated(t, n)
		flipRecord(t, path, "history", "h050")
		log := &logLines{}
		s, hist := reopen(t, path, log)
		defer s.Close()
		// The structure is sound: no repair, the one record is skipped and reported
		// once, however often the history is read.
		if log.count("queue database was damaged") != 0 || len(damagedCopies(t, path)) != 0 {
			t.Fatalf("repaired a file whose damage is inside one record: %v", log.lines)
		}
		if len(hist) != n-1 {
			t.Errorf("%d history entries, want the %d but h050", len(hist), n-1)
		}
		log.mu.Lock()
		log.lines = nil
		log.mu.Unlock()
		for i := 0; i < 3; i++ {
			if _, err := s.ListHistory(context.Background(), -1, -1); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.GetHistory(context.Background(), "h050"); !errors.Is(err, executor.ErrNotFound) {
			t.Errorf("GetHistory of the damaged record: %v", err)
		}
		if c := log.count("damaged record in the queue database skipped"); c != 1 {
			t.Errorf("the damaged record was reported %d times by one store, want once", c)
		}
	})
	t.Run("damaged pending and running records", func(t *testing.T) {
		path := populated(t, 3)
		flipRecord(t, path, "running", "run")
		flipRecord(t, path, "pending", "p2")
		log := &logLines{}
		s, err := Open(path, Options{Logger: log.logger()})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		ctx := context.Background()
		// The running one is retired at Open, the pending one when its turn comes:
		// both end in the history as errors, and the queue goes on.
		var got []string
		for range 2 {
			l, err := s.Lease(ctx)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, l.ID)
			s.Ack(ctx, l.ID, entry(l, executor.StatusSuccess))
		}
		if fmt.Sprint(got) != "[p1 p3]" {
			t.Errorf("leased %v, want [p1 p3]", got)
		}
		for _, id := range []string{"run", "p2"} {
			e, err := s.GetHistory(ctx, id)
			if err != nil || e.Status.StatusStr != executor.StatusError || !strings.Contains(fmt.Sprint(e.Status.Messages), ExceptionDamagedRecord) {
				t.Errorf("history of damaged %s: %+v %v", id, e, err)
			}
		}
	})
	t.Run("0-byte file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "queue.db")
		os.WriteFile(path, nil, 0o600)
		log := &logLines{}
		s, hist := reopen(t, path, log)
		defer s.Close()
		if len(hist) != 0 || log.count("the file is empty") != 1 || len(damagedCopies(t, path)) != 1 {
			t.Fatalf("history %d, log %v", len(hist), log.lines)
		}
	})
	t.Run("not a queue database", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "queue.db")
		text := bytes.Repeat([]byte("my thesis, chapter one\n"), 1000)
		os.WriteFile(path, text, 0o600)
		_, err := Open(path, Options{})
		if !errors.Is(err, ErrNotQueue) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "move the file away") {
			t.Fatalf("err = %v", err)
		}
		if got, _ := os.ReadFile(path); !bytes.Equal(got, text) || len(damagedCopies(t, path)) != 0 {
			t.Fatal("the file was changed or moved")
		}
	})
	t.Run("both meta pages garbage", func(t *testing.T) {
		path := populated(t, 3)
		writeAt(t, path, bytes.Repeat([]byte{0x5a}, 8192), 0)
		if _, err := Open(path, Options{}); !errors.Is(err, ErrNotQueue) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("one meta page garbage", func(t *testing.T) {
		path := populated(t, 3)
		writeAt(t, path, bytes.Repeat([]byte{0x5a}, 4096), 0)
		log := &logLines{}
		s, hist := reopen(t, path, log)
		defer s.Close()
		// bbolt falls back on the other meta page: the last transaction but one.
		if len(hist) < 3 {
			t.Errorf("%d history entries", len(hist))
		}
	})
}

// flipRecord flips 16 bytes at the start of the live record of prompt id in bucket (and
// of any stale copy of it in freed pages).
func flipRecord(t *testing.T, path, bucket, id string) {
	t.Helper()
	b, err := openBoltFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var val []byte
	b.walk(func(p []string, k, v []byte) {
		if len(p) == 1 && p[0] == bucket && bytes.Contains(v[:min(len(v), 40)], []byte(`"`+id+`"`)) {
			val = bytes.Clone(v)
		}
	}, func([]string, error) {})
	b.close()
	if val == nil {
		t.Fatalf("no record of %s in %s", id, bucket)
	}
	data, _ := os.ReadFile(path)
	n := 0
	for at := bytes.Index(data, val); at >= 0; at = bytes.Index(data, val) {
		for i := at; i < at+16; i++ {
			data[i] ^= 0xA5
		}
		n++
	}
	if n == 0 {
		t.Fatalf("the record of %s is not in the file in one piece", id)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func writeAt(t *testing.T, path string, data []byte, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
}

// TestPanicBreaksOneCall: a panic inside a transaction fails that call and breaks the
// store (every later call says so), instead of killing the process.
func TestPanicBreaksOneCall(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "q.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = s.update(context.Background(), func(*bolt.Tx) error { panic("page 7: unreachable unfreed") })
	if !errors.Is(err, errDamaged) || !strings.Contains(err.Error(), "restart") {
		t.Fatalf("err = %v", err)
	}
	if _, err := s.Push(context.Background(), job("x"), executor.PushOptions{}); !errors.Is(err, errDamaged) {
		t.Errorf("push after the panic: %v", err)
	}
	if err := s.Close(); err != nil && !errors.Is(err, errDamaged) {
		t.Error(err)
	}
}

// FuzzOpenDamaged writes a mutated queue file and opens it: whatever the bytes, Open
// returns a working store or an error, and never panics or faults.
func FuzzOpenDamaged(f *testing.F) {
	dir := f.TempDir()
	path := filepath.Join(dir, "seed.db")
	s, err := Open(path, Options{})
	if err != nil {
		f.Fatal(err)
	}
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		j := job(fmt.Sprint("s", i))
		s.Push(ctx, j, executor.PushOptions{})
	}
	l, _ := s.Lease(ctx)
	s.Ack(ctx, l.ID, entry(l, executor.StatusSuccess))
	s.Close()
	seed, _ := os.ReadFile(path)
	f.Add(seed, uint32(0), []byte{})
	f.Add(seed, uint32(4096*2+20), []byte{0xff, 0xff, 0xff, 0xff})
	f.Add(seed, uint32(4096*3), bytes.Repeat([]byte{7}, 64))
	f.Fuzz(func(t *testing.T, base []byte, at uint32, patch []byte) {
		if len(base) > 1<<20 {
			return
		}
		data := bytes.Clone(base)
		if int(at) < len(data) {
			copy(data[at:], patch)
		}
		p := filepath.Join(t.TempDir(), "q.db")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Open(p, Options{noSync: true})
		if err != nil {
			return
		}
		defer s.Close()
		s.List(ctx)
		s.ListHistory(ctx, -1, -1)
		if _, err := s.Push(ctx, &executor.Job{ID: "new", Prompt: graph.Prompt{}}, executor.PushOptions{}); err == nil {
			if l, err := s.Lease(ctx); err == nil {
				s.Ack(ctx, l.ID, entry(l, executor.StatusSuccess))
			}
		}
	})
}

// TestPendingKeysOutOfOrder: a pending key rewritten to sort before its neighbour is
// one bbolt's binary search cannot find, so Delete leaves it and a Lease that deleted
// and looked again would spin forever. Open finds the order broken and salvages, and
// every readable job is still served once.
func TestPendingKeysOutOfOrder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "queue.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, id := range []string{"a", "b"} {
		if _, err := s.Push(ctx, job(id), executor.PushOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	var second []byte
	db.View(func(tx *bolt.Tx) error {
		k, _ := tx.Bucket(bucketPending).Cursor().Last()
		second = bytes.Clone(k)
		return nil
	})
	db.Close()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Count(data, second) == 0 {
		t.Fatalf("key %x not in the file", second)
	}
	data = bytes.ReplaceAll(data, second, append([]byte{0x01}, second[1:]...))
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	log := &logLines{}
	s, err = Open(path, Options{Logger: log.logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if len(damagedCopies(t, path)) != 1 {
		t.Fatalf("the damaged file was not kept beside: %v", log.lines)
	}
	served := map[string]int{}
	for {
		_, pending, err := s.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(pending) == 0 {
			break
		}
		l, err := s.Lease(ctx)
		if err != nil {
			t.Fatal(err)
		}
		served[l.ID]++
		if err := s.Ack(ctx, l.ID, entry(l, executor.StatusSuccess)); err != nil {
			t.Fatal(err)
		}
	}
	if served["a"] != 1 || served["b"] != 1 {
		t.Fatalf("served %v, want a and b once each; log: %v", served, log.lines)
	}
}
