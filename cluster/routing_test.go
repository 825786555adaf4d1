package cluster

import (
	"reflect"
	"testing"
	"time"

	"github.com/forgeflow/forgeflow/executor"
	"github.com/forgeflow/forgeflow/graph"
)

func TestRequires(t *testing.T) {
	job := &executor.Job{Prompt: graph.Prompt{
		"1": {ClassType: "CheckpointLoaderSimple", Inputs: map[string]any{"ckpt_name": `sdxl\base.safetensors`}},
		"2": {ClassType: "LoraLoader", Inputs: map[string]any{"lora_name": "detail.SAFETENSORS", "strength_model": 1.0, "model": graph.NewLink("1", 0)}},
		"3": {ClassType: "LoadImage", Inputs: map[string]any{"image": "cat.png"}},
		"4": {ClassType: "UnetLoaderGGUF", Inputs: map[string]any{"unet_name": "flux-q4.gguf"}},
		"5": {ClassType: "CLIPTextEncode", Inputs: map[string]any{"text": "a photo"}},
		"6": {ClassType: "CheckpointLoaderSimple", Inputs: map[string]any{"ckpt_name": "sdxl/base.safetensors"}},
	}}
	want := []string{"detail.SAFETENSORS", "flux-q4.gguf", "sdxl/base.safetensors"}
	if got := Requires(job); !reflect.DeepEqual(got, want) {
		t.Fatalf("Requires = %v, want %v", got, want)
	}
}

// TestChoose: a worker skips jobs whose models it lacks, and for PreferWait after a
// push leaves a job to an idle worker that has its models loaded.
func TestChoose(t *testing.T) {
	q := &Queue{opts: Options{Name: "me"}}
	p := newPeers(q)
	q.peers = p
	now := time.Now()
	pending := func(id string, pushed time.Time, req ...string) *indexed {
		return &indexed{id: id, rec: &record{Job: &jobPart{Item: executor.Job{ID: id}, Requires: req, Pushed: pushed.UnixMilli()}}}
	}
	p.models, p.loaded = setOf([]string{"a.safetensors", "b.safetensors"}), setOf(nil)
	p.others["other"] = Advert{Name: "other", Models: []string{"b.safetensors", "c.safetensors"}, Loaded: []string{"b.safetensors"}, Updated: now.UnixMilli()}

	cases := []struct {
		name     string
		pending  []*indexed
		want     string
		deferred bool
	}{
		{"first runnable", []*indexed{pending("x", now), pending("y", now, "a.safetensors")}, "x", false},
		{"missing model skipped", []*indexed{pending("x", now, "c.safetensors"), pending("y", now, "a.safetensors")}, "y", true},
		{"nothing runnable", []*indexed{pending("x", now, "c.safetensors")}, "", true},
		{"left to the worker that has it loaded", []*indexed{pending("x", now, "b.safetensors"), pending("y", now)}, "y", true},
		{"taken after the preference expired", []*indexed{pending("x", now.Add(-PreferWait-time.Second), "b.safetensors")}, "x", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, deferred := p.choose(tc.pending)
			id := ""
			if got != nil {
				id = got.id
			}
			if id != tc.want || deferred != tc.deferred {
				t.Fatalf("choose = %q deferred %v, want %q deferred %v", id, deferred, tc.want, tc.deferred)
			}
		})
	}
	// A busy worker with the model loaded is not waited for.
	a := p.others["other"]
	a.Running = "z"
	p.others["other"] = a
	if got, _ := p.choose([]*indexed{pending("x", now, "b.safetensors")}); got == nil || got.id != "x" {
		t.Fatalf("with the other worker busy: %v", got)
	}
	// /queue's reasons.
	why := p.refusals([]string{"c.safetensors"})
	if why["refused_by"].(map[string]string)["me"] != "missing c.safetensors" || why["waiting"] != nil {
		t.Fatalf("refusals = %v", why)
	}
	if why := p.refusals([]string{"a.safetensors"}); why["refused_by"].(map[string]string)["other"] != "missing a.safetensors" {
		t.Fatalf("refusals = %v", why)
	}
}

// TestDamagedRecordSkipped: an unreadable record is left out of the listings and
// reported once, never a panic.
func TestDamagedRecordSkipped(t *testing.T) {
	n := startNode(t)
	q, err := Open(t.Context(), n.ClientURL(), Options{Name: "w", Prefix: "dmg"})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if _, err := q.Push(t.Context(), workJob("good", 1), executor.PushOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{jobKey("bad"), jobKey("worse")} {
		if _, err := q.kv.Put(t.Context(), key, []byte(`{"job": {"item": [1, 2`)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := q.kv.Put(t.Context(), jobKey("empty-id"), []byte(`{"job": {"item": [0, "", {}, {}, []]}}`)); err != nil {
		t.Fatal(err)
	}
	_, pending, err := q.List(t.Context())
	if err != nil || len(pending) != 1 || pending[0].ID != "good" {
		t.Fatalf("List = %v, %v; want the good job only", pending, err)
	}
	if _, err := q.Push(t.Context(), workJob("bad", 1), executor.PushOptions{}); err == nil {
		t.Fatal("a push over an unreadable record succeeded")
	}
	if h, err := q.ListHistory(t.Context(), -1, -1); err != nil || len(h) != 0 {
		t.Fatalf("ListHistory = %v, %v", h, err)
	}
	if n, err := q.Remaining(t.Context()); err != nil || n != 1 {
		t.Fatalf("Remaining = %d, %v", n, err)
	}
}
