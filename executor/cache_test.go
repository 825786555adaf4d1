package executor

import (
	"errors"
	"fmt"
	"testing"
)

func entryN(n int) *cacheEntry { return &cacheEntry{outputs: [][]any{{n}}} }

func TestLRUKeepsLastPromptAndTrimsOldest(t *testing.T) {
	c, err := newOutputCache(CacheOptions{Mode: CacheLRU, LRUSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		c.put(fmt.Sprint(i), entryN(i))
	}
	c.get("0") // 0 becomes the most recently used
	c.endPrompt(map[string]bool{"1": true, "2": true, "3": true})
	// 0 is not in the prompt: it goes although it was used last; 1..3 stay (over size).
	if _, ok := c.get("0"); ok || c.len() != 3 {
		t.Fatalf("after first prompt: len %d, 0 kept %v", c.len(), ok)
	}
	c.put("4", entryN(4))
	c.endPrompt(map[string]bool{"4": true})
	// Trimmed to 2: 4 (this prompt) and the most recently used of the rest.
	if c.len() != 2 {
		t.Fatalf("len %d, want 2", c.len())
	}
	if _, ok := c.get("4"); !ok {
		t.Error("the last prompt's entry was evicted")
	}
	if _, ok := c.get("3"); !ok {
		t.Error("the most recently used older entry was evicted")
	}
}

func TestClassicKeepsOnlyLastPrompt(t *testing.T) {
	c, _ := newOutputCache(CacheOptions{})
	c.put("a", entryN(1))
	c.put("b", entryN(2))
	c.endPrompt(map[string]bool{"b": true})
	if _, ok := c.get("a"); ok {
		t.Error("classic kept an entry of an older prompt")
	}
	if _, ok := c.get("b"); !ok {
		t.Error("classic dropped the last prompt's entry")
	}
	c.clear()
	if c.len() != 0 {
		t.Error("clear left entries")
	}
}

func TestNoneKeepsNothing(t *testing.T) {
	c, _ := newOutputCache(CacheOptions{Mode: CacheNone})
	c.put("a", entryN(1))
	if _, ok := c.get("a"); ok {
		t.Error("none cache returned an entry")
	}
}

func TestRelieve(t *testing.T) {
	cases := []struct {
		name        string
		entries     int
		avail       func(c *outputCache) (uint64, error)
		wantEvicted int
	}{
		{"no pressure", 8, func(*outputCache) (uint64, error) { return 100, nil }, 0},
		// Pressure eases once at most 4 entries are left: 8 → 6 → 5 → 4.
		{"until eased", 8, func(c *outputCache) (uint64, error) { return uint64(100 - 10*c.len()), nil }, 4},
		{"never eases", 8, func(*outputCache) (uint64, error) { return 0, nil }, 8},
		{"reader fails", 8, func(*outputCache) (uint64, error) { return 0, errors.New("no meminfo") }, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var c *outputCache
			c, _ = newOutputCache(CacheOptions{Mode: CacheLRU, LRUSize: 100, MinFreeRAM: 60,
				AvailableRAM: func() (uint64, error) { return tc.avail(c) }})
			for i := range tc.entries {
				c.put(fmt.Sprint(i), entryN(i))
			}
			c.get("0") // the oldest put is now the most recently used
			if got := c.relieve(); got != tc.wantEvicted {
				t.Fatalf("evicted %d, want %d", got, tc.wantEvicted)
			}
			if tc.wantEvicted > 0 && tc.wantEvicted < tc.entries {
				if _, ok := c.get("0"); !ok {
					t.Error("evicted the most recently used entry before older ones")
				}
			}
		})
	}
}
