package memory

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"time"
)

// Identity names what a cached model was loaded from. Two loads with equal identities
// share one cached value; a file rewritten in place has a new size or time and so a new
// identity.
type Identity struct {
	Path    string // absolute, cleaned
	Size    int64
	ModTime time.Time
	// Part tells apart different things loaded from one file, such as the UNet and the
	// VAE of a checkpoint ("" for the file as a whole).
	Part string
}

// IdentityOf stats path and returns its identity for part.
func IdentityOf(path, part string) (Identity, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return Identity{}, fmt.Errorf("memory: %w", err)
	}
	st, err := os.Stat(abs)
	if err != nil {
		return Identity{}, fmt.Errorf("memory: %w", err)
	}
	if !st.Mode().IsRegular() {
		return Identity{}, fmt.Errorf("memory: %s is not a regular file", abs)
	}
	return Identity{Path: abs, Size: st.Size(), ModTime: st.ModTime(), Part: part}, nil
}

func (id Identity) String() string {
	if id.Part == "" {
		return id.Path
	}
	return id.Path + "#" + id.Part
}

// Loaded is what a Loader produced.
type Loaded struct {
	Value any
	// Bytes is the memory the value holds, mapped file pages included; it is what the
	// budget counts.
	Bytes int64
	// Close releases the value (unmaps files); it runs once, after the value is evicted
	// and no handle refers to it any more. Nil when there is nothing to release.
	Close func() error
}

// Loader loads a model. It should stop when ctx is cancelled.
type Loader func(ctx context.Context) (Loaded, error)

// Options configure New.
type Options struct {
	// RAMBudget is how many bytes cached models may hold. Zero means three quarters of
	// the total RAM; a negative value means no limit.
	RAMBudget int64
	// MeminfoPath is the /proc/meminfo style file read for RAM numbers ("" for
	// /proc/meminfo).
	MeminfoPath string
	// Logger receives load and eviction messages; nil discards them.
	Logger *slog.Logger
}

// Manager holds the model cache and answers every memory question. It is safe for
// concurrent use.
type Manager struct {
	meminfo string
	log     *slog.Logger
	budget  int64 // < 0: unlimited

	mu      sync.Mutex
	entries map[Identity]*entry
	used    int64  // bytes of ready entries, evicted-but-pinned ones included
	tick    uint64 // LRU clock
	devices []Device
	pending []pendingClose // evicted values to close once m.mu is released
}

type entry struct {
	id      Identity
	done    chan struct{} // closed when the load finished (ok or not)
	err     error
	val     Loaded
	refs    int
	lastUse uint64
	usedAt  time.Time
	loadDur time.Duration
	evicted bool // out of the map; closed when refs reaches 0
}

// New returns a Manager. It reads the RAM total once to size the default budget.
func New(opts Options) *Manager {
	m := &Manager{meminfo: opts.MeminfoPath, log: opts.Logger, budget: opts.RAMBudget, entries: map[Identity]*entry{}}
	if m.meminfo == "" {
		m.meminfo = "/proc/meminfo"
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if m.budget == 0 {
		ram, err := ReadMeminfo(m.meminfo)
		if err != nil {
			m.log.Warn("ram size unknown, model cache unlimited", "err", err)
			m.budget = -1
		} else {
			m.budget = ram.Total / 4 * 3
		}
	}
	return m
}

// Budget returns the RAM budget in bytes (negative: unlimited).
func (m *Manager) Budget() int64 { return m.budget }

// Handle is a reference to a cached model. The value stays valid until Release; a
// model is never evicted while a handle refers to it.
type Handle struct {
	m    *Manager
	e    *entry
	once sync.Once
}

// Value returns the loaded value.
func (h *Handle) Value() any { return h.e.val.Value }

// Bytes returns the memory the value holds.
func (h *Handle) Bytes() int64 { return h.e.val.Bytes }

// Identity returns what the value was loaded from.
func (h *Handle) Identity() Identity { return h.e.id }

// Release drops the reference. Calling it again does nothing.
func (h *Handle) Release() {
	h.once.Do(func() { h.m.release(h.e) })
}

// ErrLoadFailed wraps a loader's error.
var ErrLoadFailed = errors.New("load failed")

// Load returns the cached model for id, calling load when it is not cached. Concurrent
// loads of one identity run load once. Before loading, least recently used unpinned
// models are evicted so that id.Size more bytes fit the budget; after loading, again for
// the value's real size. Models of the same path and part but another size or time
// (the file was replaced) are evicted. A failed load is not cached.
func (m *Manager) Load(ctx context.Context, id Identity, load Loader) (*Handle, error) {
	for {
		m.mu.Lock()
		e, ok := m.entries[id]
		if !ok {
			break // m.mu held
		}
		e.refs++
		m.mu.Unlock()
		select {
		case <-e.done:
		case <-ctx.Done():
			m.release(e)
			return nil, ctx.Err()
		}
		if e.err == nil {
			m.mu.Lock()
			m.touch(e)
			m.mu.Unlock()
			return &Handle{m: m, e: e}, nil
		}
		m.release(e)
		if errors.Is(e.err, context.Canceled) || errors.Is(e.err, context.DeadlineExceeded) {
			// The loader we waited on was cancelled by its own caller: try ourselves.
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			continue
		}
		return nil, e.err
	}
	// m.mu is held and id is not cached: this caller loads it.
	e := &entry{id: id, done: make(chan struct{}), refs: 1}
	m.entries[id] = e
	m.dropStale(id)
	m.evictFor(id.Size)
	m.mu.Unlock()
	m.flushCloses()

	start := time.Now()
	val, err := runLoader(ctx, load)
	m.mu.Lock()
	if err != nil {
		e.err = fmt.Errorf("memory: %s: %w: %w", id, ErrLoadFailed, err)
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			e.err = err
		}
		delete(m.entries, id)
		e.refs--
		close(e.done)
		m.mu.Unlock()
		return nil, e.err
	}
	e.val = val
	e.loadDur = time.Since(start)
	m.used += val.Bytes
	m.touch(e)
	close(e.done)
	m.evictFor(0)
	m.mu.Unlock()
	m.flushCloses()
	m.log.Debug("model loaded", "model", id.String(), "bytes", val.Bytes, "ms", e.loadDur.Milliseconds())
	return &Handle{m: m, e: e}, nil
}

// runLoader calls load, turning a panic into an error: a bad file must not take the
// server down.
func runLoader(ctx context.Context, load Loader) (val Loaded, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("loader panicked: %v", r)
		}
	}()
	val, err = load(ctx)
	if err == nil && val.Bytes < 0 {
		err = fmt.Errorf("loader reported %d bytes", val.Bytes)
	}
	return val, err
}

func (m *Manager) touch(e *entry) {
	m.tick++
	e.lastUse = m.tick
	e.usedAt = time.Now()
}

func (m *Manager) release(e *entry) {
	m.mu.Lock()
	e.refs--
	var closeFn func() error
	if e.refs == 0 && e.evicted {
		closeFn = m.forget(e)
	}
	m.mu.Unlock()
	m.closeValue(e, closeFn)
}

// dropStale evicts entries of id's path and part with another size or time.
func (m *Manager) dropStale(id Identity) {
	for other, e := range m.entries {
		if other != id && other.Path == id.Path && other.Part == id.Part && isReady(e) {
			m.evictLocked(e)
		}
	}
}

// evictFor evicts least recently used unpinned models until need more bytes fit the
// budget or nothing evictable is left. m.mu is held.
func (m *Manager) evictFor(need int64) {
	if m.budget < 0 {
		return
	}
	for m.used+need > m.budget {
		var victim *entry
		for _, e := range m.entries {
			if e.refs == 0 && isReady(e) && (victim == nil || e.lastUse < victim.lastUse) {
				victim = e
			}
		}
		if victim == nil {
			if m.used+need > m.budget {
				m.log.Warn("models in use exceed the ram budget", "used", m.used, "need", need, "budget", m.budget)
			}
			return
		}
		m.evictLocked(victim)
	}
}

func isReady(e *entry) bool {
	select {
	case <-e.done:
		return e.err == nil
	default:
		return false
	}
}

// evictLocked takes e out of the cache; it is closed now if unreferenced, else on the
// last Release. m.mu is held; the close itself runs without it.
func (m *Manager) evictLocked(e *entry) {
	delete(m.entries, e.id)
	e.evicted = true
	m.log.Debug("model evicted", "model", e.id.String(), "bytes", e.val.Bytes, "refs", e.refs)
	if e.refs == 0 {
		// Closed by flushCloses, outside the lock: unmapping a large file takes a while.
		m.pending = append(m.pending, pendingClose{e, m.forget(e)})
	}
}

type pendingClose struct {
	e  *entry
	fn func() error
}

// flushCloses closes what evictions queued. Call it after unlocking m.mu.
func (m *Manager) flushCloses() {
	m.mu.Lock()
	p := m.pending
	m.pending = nil
	m.mu.Unlock()
	for _, c := range p {
		m.closeValue(c.e, c.fn)
	}
}

// forget stops counting e's bytes and returns its close function, at most once.
func (m *Manager) forget(e *entry) func() error {
	m.used -= e.val.Bytes
	fn := e.val.Close
	e.val.Close = nil
	return fn
}

func (m *Manager) closeValue(e *entry, fn func() error) {
	if fn == nil {
		return
	}
	if err := fn(); err != nil {
		m.log.Warn("closing evicted model", "model", e.id.String(), "err", err)
	}
}

// UnloadAll evicts every cached model (POST /free "unload_models"). Models in use are
// released when their last handle is.
func (m *Manager) UnloadAll() {
	m.mu.Lock()
	for _, e := range m.entries {
		if isReady(e) {
			m.evictLocked(e)
		}
	}
	m.mu.Unlock()
	m.flushCloses()
}

// FreeMemory unloads every model and hands freed heap memory back to the operating
// system (POST /free "free_memory", ComfyUI's unload_all_models + soft_empty_cache).
func (m *Manager) FreeMemory() {
	m.UnloadAll()
	runtime.GC()
	debug.FreeOSMemory()
	m.mu.Lock()
	devs := slices.Clone(m.devices)
	m.mu.Unlock()
	for _, d := range devs {
		if f, ok := d.(Freer); ok {
			f.FreeCache()
		}
	}
}

// LoadFile is Load for a file on disk: it stats path for its identity, so an unchanged
// file is a cache hit and a rewritten one is loaded again.
func (m *Manager) LoadFile(ctx context.Context, path, part string, load func(ctx context.Context, path string) (Loaded, error)) (*Handle, error) {
	id, err := IdentityOf(path, part)
	if err != nil {
		return nil, err
	}
	return m.Load(ctx, id, func(ctx context.Context) (Loaded, error) { return load(ctx, id.Path) })
}
