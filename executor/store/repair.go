package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/forgeflow/forgeflow/executor"
)

// What Open does with a damaged file (see Open):
//
//  1. check: a 0-byte file, a file cut shorter than its pages, or a page tree that does
//     not hold together (walker: page numbers out of range, elements outside their
//     page, pages reached twice, unknown page types), then bbolt's own Check
//     (freelist, key order), are damage;
//  2. salvage: every key and value that can still be read from the page tree is
//     copied into a fresh file: pending and running jobs, the history, the counters
//     (recomputed when unreadable); the id indexes are rebuilt; a record that does
//     not decode (executor.DecodeJobRecord, DecodeHistoryEntry) is left out;
//  3. the damaged file is kept beside the fresh one, as FILE.damaged-TIMESTAMP, and
//     both are named in the log with what was kept and what was lost.
//
// A file with no bbolt meta page at all is not taken for a damaged queue but for
// another program's file given by mistake: Open refuses it (ErrNotQueue) and touches
// nothing.

// ErrNotQueue is returned by Open for a file that is not a queue database.
var ErrNotQueue = errors.New("not a queue database")

// errInUse is a file locked by another process.
var errInUse = errors.New("the file is in use by another process")

// maxListedProblems bounds the problems a report lists.
const maxListedProblems = 8

// damage is what the check found.
type damage struct {
	problems []string
	more     int
}

func (d *damage) add(s string) {
	if len(d.problems) < maxListedProblems {
		d.problems = append(d.problems, s)
	} else {
		d.more++
	}
}

func (d *damage) found() bool { return d != nil && len(d.problems) > 0 }

func (d *damage) String() string {
	s := strings.Join(d.problems, "; ")
	if d.more > 0 {
		s += fmt.Sprintf("; and %d more", d.more)
	}
	return s
}

// checkFile reads path's pages without bbolt (walker) and reports the damage found.
// A missing file is sound (bbolt creates it); a file without bbolt's magic is
// ErrNotQueue.
func checkFile(path string) (*damage, error) {
	st, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	d := &damage{}
	if st.Size() == 0 {
		d.add("the file is empty (0 bytes)")
		return d, nil
	}
	b, err := openBoltFile(path)
	if errors.Is(err, errNotBolt) {
		return nil, fmt.Errorf("%w: %v", ErrNotQueue, err)
	}
	if err != nil {
		return nil, err
	}
	defer b.close()
	if !b.metaOK {
		d.add("no meta page passes its checksum")
	}
	if need := int64(b.meta.hwm) * int64(b.meta.pageSize); b.size < need {
		d.add(fmt.Sprintf("the file is cut short: %d bytes, its pages need %d", b.size, need))
	}
	b.walk(func([]string, []byte, []byte) {}, func(path []string, err error) {
		d.add(where(path) + err.Error())
	})
	return d, nil
}

func where(path []string) string {
	if len(path) == 0 {
		return ""
	}
	return "bucket " + strings.Join(path, "/") + ": "
}

// boltCheck runs bbolt's own consistency check on a file that passed checkFile (so
// that bbolt follows no page number out of its map) and reports what it finds.
func boltCheck(db *bolt.DB) *damage {
	d := &damage{}
	err := db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			d.add("bbolt check: " + err.Error())
		}
		return nil
	})
	if err != nil {
		d.add("bbolt check: " + err.Error())
	}
	return d
}

// salvaged is what salvage copied.
type salvaged struct {
	pending, running, history int
	lost                      int // records that did not decode
}

// salvage copies what can be read from the damaged file at path into a fresh file,
// then moves the damaged file aside and the fresh one in its place. It returns the
// damaged copy's name.
func salvage(path string, maxHistory int) (string, salvaged, error) {
	var got salvaged
	records := map[string][][2][]byte{} // bucket name → key/values, in tree order
	if b, err := openBoltFile(path); err == nil {
		b.walk(func(p []string, k, v []byte) {
			if len(p) == 1 {
				records[p[0]] = append(records[p[0]], [2][]byte{bytes.Clone(k), bytes.Clone(v)})
			}
		}, func([]string, error) {})
		b.close()
	}
	fresh := path + ".repairing"
	os.Remove(fresh)
	db, err := bolt.Open(fresh, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return "", got, err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		var err error
		got, err = rebuild(tx, records, maxHistory)
		return err
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(fresh)
		return "", got, err
	}
	aside := fmt.Sprintf("%s.damaged-%s", path, time.Now().UTC().Format("20060102T150405Z"))
	if err := os.Rename(path, aside); err != nil {
		os.Remove(fresh)
		return "", got, err
	}
	if err := os.Rename(fresh, path); err != nil {
		return aside, got, err
	}
	syncDir(filepath.Dir(path))
	return aside, got, nil
}

// rebuild writes the salvaged records into a fresh file's buckets.
func rebuild(tx *bolt.Tx, records map[string][][2][]byte, maxHistory int) (salvaged, error) {
	var got salvaged
	for _, name := range [][]byte{bucketMeta, bucketPending, bucketPendingIDs, bucketRunning, bucketHistory, bucketHistoryIDs} {
		if _, err := tx.CreateBucket(name); err != nil {
			return got, err
		}
	}
	counter, seq := uint64(0), uint64(0)
	for _, kv := range records[string(bucketMeta)] {
		if len(kv[1]) == 8 {
			switch string(kv[0]) {
			case string(keyCounter):
				counter = binary.BigEndian.Uint64(kv[1])
			case string(keySeq):
				seq = binary.BigEndian.Uint64(kv[1])
			}
		}
	}
	// The counter must stay ahead of every number given out, the sequence ahead of
	// every key; both are recomputed from the records when their own were lost.
	seen := func(number float64) {
		if n := math.Abs(number); n < 1<<53 && uint64(n)+1 > counter {
			counter = uint64(n) + 1
		}
	}
	ids := map[string]bool{}
	for _, kv := range records[string(bucketPending)] {
		rec, err := executor.DecodeJobRecord(kv[1])
		if err != nil || len(kv[0]) != 16 || ids[rec.Job.ID] {
			got.lost++
			continue
		}
		ids[rec.Job.ID] = true
		rec.Key = kv[0]
		seen(rec.Job.Number)
		seq = max(seq, binary.BigEndian.Uint64(kv[0][8:])+1)
		if err := putPending(tx, rec); err != nil {
			return got, err
		}
		got.pending++
	}
	for _, kv := range records[string(bucketRunning)] {
		rec, err := executor.DecodeJobRecord(kv[1])
		if err != nil || rec.Job.ID != string(kv[0]) || ids[rec.Job.ID] {
			got.lost++
			continue
		}
		ids[rec.Job.ID] = true
		seen(rec.Job.Number)
		b, err := executor.EncodeJobRecord(rec)
		if err != nil {
			return got, err
		}
		if err := tx.Bucket(bucketRunning).Put(kv[0], b); err != nil {
			return got, err
		}
		got.running++
	}
	hist := records[string(bucketHistory)]
	sort.SliceStable(hist, func(i, j int) bool { return bytes.Compare(hist[i][0], hist[j][0]) < 0 })
	h, hids := tx.Bucket(bucketHistory), tx.Bucket(bucketHistoryIDs)
	for _, kv := range hist {
		e, err := executor.DecodeHistoryEntry(kv[1])
		if err != nil || len(kv[0]) != 8 {
			got.lost++
			continue
		}
		seen(e.Prompt.Number)
		seq = max(seq, binary.BigEndian.Uint64(kv[0])+1)
		if old := hids.Get([]byte(e.Prompt.ID)); old != nil {
			// The same id twice: the later entry replaces the earlier, as PutHistory does.
			if err := h.Delete(bytes.Clone(old)); err != nil {
				return got, err
			}
			got.history--
		}
		if err := h.Put(kv[0], kv[1]); err != nil {
			return got, err
		}
		if err := hids.Put([]byte(e.Prompt.ID), kv[0]); err != nil {
			return got, err
		}
		got.history++
	}
	// Beyond the bound, the oldest go, as PutHistory would.
	for c := h.Cursor(); got.history > maxHistory; got.history-- {
		k, v := c.First()
		e, _ := executor.DecodeHistoryEntry(v)
		if err := c.Delete(); err != nil {
			return got, err
		}
		if e != nil {
			if err := hids.Delete([]byte(e.Prompt.ID)); err != nil {
				return got, err
			}
		}
		_ = k
	}
	meta := tx.Bucket(bucketMeta)
	for _, kv := range []struct {
		k []byte
		v uint64
	}{{keyCounter, counter}, {keySeq, seq}, {keyHistoryN, uint64(got.history)}} {
		if err := putUint(meta, kv.k, kv.v); err != nil {
			return got, err
		}
	}
	return got, nil
}

// syncDir makes the renames in dir durable.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// checkAndRepair is Open's first step: it checks the file at path and, when it is
// damaged, salvages it (see the top of this file). It holds the file's lock while it
// works.
func checkAndRepair(path string, opts Options) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	if err := lockFile(f, opts.Timeout); err != nil {
		return err
	}
	defer unlockFile(f)
	d, err := checkFile(path)
	if err != nil {
		return err
	}
	if !d.found() {
		return nil
	}
	return repair(path, d, opts)
}

// repair salvages a damaged file and logs what happened.
func repair(path string, d *damage, opts Options) error {
	aside, got, err := salvage(path, opts.MaxHistory)
	if err != nil {
		return fmt.Errorf("%s is damaged (%s) and could not be repaired: %w; move it away to start with an empty queue and history", path, d, err)
	}
	opts.Logger.Warn("queue database was damaged; what could be read is in a fresh file, the damaged one is kept beside it",
		slog.String("file", path), slog.String("damaged_copy", aside), slog.String("damage", d.String()),
		slog.Int("pending", got.pending), slog.Int("running", got.running), slog.Int("history", got.history),
		slog.Int("records_lost", got.lost))
	return nil
}
