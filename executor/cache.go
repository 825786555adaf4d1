package executor

import (
	"container/list"
	"errors"
	"runtime/debug"
	"sync"
)

// cacheEntry is what a node run produced: per output slot the list of items (one item
// unless the node was mapped over a list or the output is a list), and its UI output.
type cacheEntry struct {
	outputs [][]any
	ui      map[string]any
}

// outputCache keeps node results between prompts, keyed by input signature. Where
// entries are stored is separate from how the key is built (plan.go), as ComfyUI keeps
// CacheKeySet apart from BasicCache/LRUCache.
type outputCache struct {
	mode    CacheMode
	size    int
	avail   func() (uint64, error)
	minFree uint64

	mu      sync.Mutex
	entries map[string]*list.Element // of *cacheItem
	lru     list.List                // front: most recently used
}

type cacheItem struct {
	sig   string
	entry *cacheEntry
}

func newOutputCache(o CacheOptions) (*outputCache, error) {
	switch o.Mode {
	case CacheClassic, CacheNone:
	case CacheLRU:
		if o.LRUSize <= 0 {
			return nil, errors.New("executor: cache: LRU size must be positive")
		}
	default:
		return nil, errors.New("executor: cache: unknown mode")
	}
	return &outputCache{
		mode:    o.Mode,
		size:    o.LRUSize,
		avail:   o.AvailableRAM,
		minFree: o.MinFreeRAM,
		entries: map[string]*list.Element{},
	}, nil
}

// get returns the entry for sig and marks it recently used.
func (c *outputCache) get(sig string) (*cacheEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[sig]
	if !ok {
		return nil, false
	}
	c.lru.MoveToFront(el)
	return el.Value.(*cacheItem).entry, true
}

// put stores an entry. With CacheNone nothing is kept: the running prompt holds its
// own results, so the cache only serves later prompts.
func (c *outputCache) put(sig string, e *cacheEntry) {
	if c.mode == CacheNone {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[sig]; ok {
		el.Value.(*cacheItem).entry = e
		c.lru.MoveToFront(el)
		return
	}
	c.entries[sig] = c.lru.PushFront(&cacheItem{sig: sig, entry: e})
}

// endPrompt applies the policy once a prompt is done. keep holds the signatures of
// the prompt's nodes: classic keeps exactly those (ComfyUI's clean_unused), LRU keeps
// those and then the most recently used up to its size, none keeps nothing.
func (c *outputCache) endPrompt(keep map[string]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch c.mode {
	case CacheClassic:
		for sig, el := range c.entries {
			if !keep[sig] {
				c.lru.Remove(el)
				delete(c.entries, sig)
			}
		}
	case CacheLRU:
		// As ComfyUI's LRUCache.clean_unused: the oldest go first, but never an entry
		// the prompt just used, so a prompt larger than the cache still caches fully.
		for el := c.lru.Back(); el != nil && c.lru.Len() > c.size; {
			prev := el.Prev()
			if it := el.Value.(*cacheItem); !keep[it.sig] {
				c.lru.Remove(el)
				delete(c.entries, it.sig)
			}
			el = prev
		}
	case CacheNone:
		c.clearLocked()
	}
}

func (c *outputCache) removeOldest() {
	el := c.lru.Back()
	if el == nil {
		return
	}
	c.lru.Remove(el)
	delete(c.entries, el.Value.(*cacheItem).sig)
}

// relieve evicts least recently used entries while the reported available memory is
// below the threshold (ComfyUI's RAM-pressure cache). It evicts a quarter of the
// entries at a time, then returns freed memory to the system so the next reading can
// see it. It returns how many entries it evicted.
func (c *outputCache) relieve() int {
	if c.avail == nil || c.minFree == 0 {
		return 0
	}
	evicted := 0
	for {
		a, err := c.avail()
		if err != nil || a >= c.minFree {
			return evicted
		}
		c.mu.Lock()
		n := c.lru.Len()
		if n == 0 {
			c.mu.Unlock()
			return evicted
		}
		batch := max(1, n/4)
		for range batch {
			c.removeOldest()
		}
		c.mu.Unlock()
		evicted += batch
		debug.FreeOSMemory()
	}
}

func (c *outputCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.clearLocked()
}

func (c *outputCache) clearLocked() {
	c.entries = map[string]*list.Element{}
	c.lru.Init()
}

func (c *outputCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}
