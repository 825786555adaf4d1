package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/forgeflow/forgeflow/executor"
)

// Advert is what a worker tells the cluster about itself, in the workers bucket
// under its name: the model files it has (as prompts name them), those loaded in
// memory, its device and free memory, and the prompt it runs.
type Advert struct {
	Name       string   `json:"name"`
	Device     string   `json:"device,omitempty"`
	FreeMemory int64    `json:"free_memory"`
	Models     []string `json:"models"`
	Loaded     []string `json:"loaded,omitempty"`
	Running    string   `json:"running,omitempty"`
	Updated    int64    `json:"updated"` // Unix ms
}

// Routing timings.
const (
	// AdvertInterval is how often a worker refreshes its advert.
	AdvertInterval = 5 * time.Second
	// advertStale: an advert older than this is a worker that stopped.
	advertStale = 3 * AdvertInterval
	// PreferWait is how long a prompt waits for an idle worker that has its models
	// loaded before any worker that has them on disk takes it.
	PreferWait = 2 * time.Second
)

// modelExts are the file types of model weights; a prompt input whose value ends in
// one names a model the worker must have.
var modelExts = []string{".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".pkl"}

// Requires lists the model files a job's prompt names: every literal input whose
// value is a model file name (ckpt_name, lora_name, vae_name, unet_name, ...). It
// needs no node schema, so a serve front and a worker agree on it.
func Requires(job *executor.Job) []string {
	var out []string
	for _, n := range job.Prompt {
		if n == nil {
			continue
		}
		for _, v := range n.Inputs {
			s, ok := v.(string)
			if !ok {
				continue
			}
			ext := strings.ToLower(path.Ext(s))
			if slices.Contains(modelExts, ext) {
				out = append(out, normModel(s))
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// normModel writes a model name with forward slashes, as folder listings do.
func normModel(s string) string { return strings.ReplaceAll(s, `\`, "/") }

// peers is a process's view of the workers bucket, and for a worker its own
// capabilities.
type peers struct {
	q  *Queue
	kv jetstream.KeyValue

	mu     sync.Mutex
	others map[string]Advert
	// own capabilities; models nil means "runs anything" (no routing data)
	models map[string]bool
	loaded map[string]bool
}

func newPeers(q *Queue) *peers { return &peers{q: q, others: map[string]Advert{}} }

func (p *peers) start(ctx context.Context) error {
	p.kv = p.q.workersKV
	w, err := p.kv.WatchAll(p.q.ctx)
	if err != nil {
		return fmt.Errorf("cluster: watch %s: %w", p.q.names.workersKV, err)
	}
	p.q.wg.Add(1)
	go func() {
		defer p.q.wg.Done()
		defer w.Stop()
		for {
			select {
			case <-p.q.ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil {
					continue
				}
				p.mu.Lock()
				var a Advert
				if e.Operation() == jetstream.KeyValuePut && json.Unmarshal(e.Value(), &a) == nil {
					p.others[e.Key()] = a
				} else {
					delete(p.others, e.Key())
				}
				p.mu.Unlock()
			}
		}
	}()
	return nil
}

// advertise publishes a worker's advert and makes its models this process's
// routing capabilities.
func (p *peers) advertise(ctx context.Context, a Advert) error {
	a.Name = p.q.opts.Name
	a.Updated = time.Now().UnixMilli()
	for i := range a.Models {
		a.Models[i] = normModel(a.Models[i])
	}
	p.mu.Lock()
	p.models = setOf(a.Models)
	p.loaded = setOf(a.Loaded)
	p.mu.Unlock()
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	_, err = p.kv.Put(ctx, advertKey(a.Name), b)
	return err
}

// withdraw removes this worker's advert (a clean stop).
func (p *peers) withdraw(ctx context.Context) {
	_ = p.kv.Delete(ctx, advertKey(p.q.opts.Name))
}

// advertKey makes a worker name a valid key.
func advertKey(name string) string {
	var b strings.Builder
	for _, r := range name {
		if r < 128 && (r == '-' || r == '_' || r == '=' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return strings.Trim(b.String(), ".")
}

func setOf(names []string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[normModel(n)] = true
	}
	return m
}

// missing lists the required models not in have (nil have: none missing).
func missing(req []string, have map[string]bool) []string {
	if have == nil {
		return nil
	}
	var out []string
	for _, r := range req {
		if !have[r] {
			out = append(out, r)
		}
	}
	return out
}

// live returns the fresh adverts of other workers.
func (p *peers) live() []Advert {
	p.mu.Lock()
	defer p.mu.Unlock()
	cut := time.Now().Add(-advertStale).UnixMilli()
	var out []Advert
	for _, a := range p.others {
		if a.Updated >= cut && a.Name != p.q.opts.Name {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, func(a, b Advert) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// choose picks the first pending job (in lease order) this worker should run. A job
// it lacks models for is left to others; so is, for PreferWait after its push, one
// whose models another idle worker has loaded and this one has not. deferred reports
// whether it left any job.
func (p *peers) choose(pending []*indexed) (pick *indexed, deferred bool) {
	p.mu.Lock()
	models, loaded := p.models, p.loaded
	p.mu.Unlock()
	var others []Advert
	for _, e := range pending {
		req := e.rec.Job.Requires
		if len(missing(req, models)) > 0 {
			deferred = true
			continue
		}
		if len(req) > 0 && models != nil && len(missing(req, loaded)) > 0 && time.Since(time.UnixMilli(e.rec.Job.Pushed)) < PreferWait {
			if others == nil {
				others = p.live()
			}
			if slices.ContainsFunc(others, func(a Advert) bool { return a.Running == "" && len(missing(req, setOf(a.Loaded))) == 0 }) {
				deferred = true
				continue
			}
		}
		return e, deferred
	}
	return nil, deferred
}

// refusals explains, for /queue, why workers do not take a job that names models:
// {"refused_by": {worker: "missing a.safetensors"}, "waiting": "..."}; nil when
// every live worker could run it.
func (p *peers) refusals(req []string) map[string]any {
	others := p.live()
	p.mu.Lock()
	if p.models != nil {
		others = append(others, Advert{Name: p.q.opts.Name, Models: keys(p.models)})
	}
	p.mu.Unlock()
	if len(others) == 0 {
		return map[string]any{"waiting": "no worker is connected"}
	}
	refused := map[string]string{}
	for _, a := range others {
		if m := missing(req, setOf(a.Models)); len(m) > 0 {
			refused[a.Name] = "missing " + strings.Join(m, ", ")
		}
	}
	if len(refused) == 0 {
		return nil
	}
	out := map[string]any{"refused_by": refused}
	if len(refused) == len(others) {
		out["waiting"] = "no connected worker has every model this prompt names"
	}
	return out
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
