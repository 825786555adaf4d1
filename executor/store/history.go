package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/forgeflow/forgeflow/executor"
)

// putHistory stores entry: in place when its id is already there, else at the end;
// the oldest entries go once the history is over its bound.
func (s *Store) putHistory(tx *bolt.Tx, entry *executor.HistoryEntry) error {
	id := []byte(entry.Prompt.ID)
	if len(id) == 0 {
		return fmt.Errorf("store: history: empty prompt id")
	}
	if len(id) > executor.MaxIDLength {
		return fmt.Errorf("store: history: %d-byte prompt id: %w", len(id), executor.ErrInvalidID)
	}
	b, err := executor.EncodeHistoryEntry(entry)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	hist, ids := tx.Bucket(bucketHistory), tx.Bucket(bucketHistoryIDs)
	if k := ids.Get(id); k != nil {
		return hist.Put(bytes.Clone(k), b)
	}
	meta := tx.Bucket(bucketMeta)
	seq := getUint(meta, keySeq)
	if err := putUint(meta, keySeq, seq+1); err != nil {
		return err
	}
	k := make([]byte, 8)
	binary.BigEndian.PutUint64(k, seq)
	if err := hist.Put(k, b); err != nil {
		return err
	}
	if err := ids.Put(id, k); err != nil {
		return err
	}
	n := getUint(meta, keyHistoryN) + 1
	// ComfyUI drops the oldest entries beyond MAXIMUM_HISTORY_SIZE.
	for ; n > uint64(s.maxHistory); n-- {
		c := hist.Cursor()
		ok, ov := c.First()
		if ok == nil {
			break
		}
		ok = bytes.Clone(ok)
		if err := c.Delete(); err != nil {
			return err
		}
		// The id is in the entry; a damaged one is found by its key instead.
		var oldID []byte
		if old, err := executor.DecodeHistoryEntry(ov); err == nil {
			oldID = []byte(old.Prompt.ID)
		} else if oldID, err = keyOwner(ids, ok); err != nil {
			return err
		}
		if oldID != nil {
			if err := ids.Delete(oldID); err != nil {
				return err
			}
		}
	}
	return putUint(meta, keyHistoryN, n)
}

// PutHistory implements executor.History.
func (s *Store) PutHistory(ctx context.Context, entry *executor.HistoryEntry) error {
	if entry == nil {
		return fmt.Errorf("store: history: nil entry")
	}
	return s.update(ctx, func(tx *bolt.Tx) error { return s.putHistory(tx, entry) })
}

// GetHistory implements executor.History.
func (s *Store) GetHistory(ctx context.Context, id string) (*executor.HistoryEntry, error) {
	var out *executor.HistoryEntry
	err := s.view(ctx, func(tx *bolt.Tx) error {
		k := tx.Bucket(bucketHistoryIDs).Get([]byte(id))
		if k == nil {
			return fmt.Errorf("store: history %q: %w", id, executor.ErrNotFound)
		}
		e, err := executor.DecodeHistoryEntry(tx.Bucket(bucketHistory).Get(k))
		if err != nil {
			// Damaged: reported, and answered as absent rather than failing.
			s.reportDamaged("history", fmt.Sprintf("%x", k), err)
			return fmt.Errorf("store: history %q: %w (%v)", id, executor.ErrNotFound, err)
		}
		out = e
		return nil
	})
	return out, err
}

// ListHistory implements executor.History with ComfyUI's paging.
func (s *Store) ListHistory(ctx context.Context, maxItems, offset int) ([]*executor.HistoryEntry, error) {
	out := []*executor.HistoryEntry{}
	err := s.view(ctx, func(tx *bolt.Tx) error {
		hist := tx.Bucket(bucketHistory)
		if offset < 0 && maxItems >= 0 {
			offset = int(getUint(tx.Bucket(bucketMeta), keyHistoryN)) - maxItems
		}
		if maxItems == 0 {
			return nil
		}
		i := 0
		c := hist.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if i >= offset {
				// A damaged entry is skipped (and reported once), not the whole
				// history failed. It still counts for paging, as it counts in the
				// history's size.
				if e, err := executor.DecodeHistoryEntry(v); err != nil {
					s.reportDamaged("history", fmt.Sprintf("%x", k), err)
				} else {
					out = append(out, e)
				}
				if maxItems > 0 && i-offset+1 >= maxItems {
					break
				}
			}
			i++
		}
		return nil
	})
	return out, err
}

// DeleteHistory implements executor.History.
func (s *Store) DeleteHistory(ctx context.Context, ids ...string) error {
	return s.update(ctx, func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		for _, id := range ids {
			k := tx.Bucket(bucketHistoryIDs).Get([]byte(id))
			if k == nil {
				continue
			}
			if err := putUint(meta, keyHistoryN, getUint(meta, keyHistoryN)-1); err != nil {
				return err
			}
			if err := tx.Bucket(bucketHistory).Delete(bytes.Clone(k)); err != nil {
				return err
			}
			if err := tx.Bucket(bucketHistoryIDs).Delete([]byte(id)); err != nil {
				return err
			}
		}
		return nil
	})
}

// ClearHistory implements executor.History.
func (s *Store) ClearHistory(ctx context.Context) error {
	return s.update(ctx, func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketHistory, bucketHistoryIDs} {
			if err := tx.DeleteBucket(b); err != nil {
				return err
			}
			if _, err := tx.CreateBucket(b); err != nil {
				return err
			}
		}
		return putUint(tx.Bucket(bucketMeta), keyHistoryN, 0)
	})
}

var _ executor.Queue = (*Store)(nil)
