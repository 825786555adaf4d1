package cluster

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"regexp"

	"github.com/forgeflow/forgeflow/executor"
)

// record is the value of one prompt id's key in the queue bucket. One key holds both
// what the queue knows of the id and its history entry, so that every change a
// contract method makes (Ack above all: out of the queue and into the history) is one
// compare-and-set on one key. A key with neither part is deleted.
type record struct {
	Job     *jobPart  `json:"job,omitempty"`
	History *histPart `json:"history,omitempty"`
}

// jobPart is a pending (Lease nil) or running job.
type jobPart struct {
	// Item is the job as /queue lists it (ComfyUI's five-element list).
	Item      executor.Job   `json:"item"`
	Sensitive map[string]any `json:"sensitive,omitempty"`
	// Slot orders jobs of equal numbers (push order). Zero means "the revision of
	// the write that stored this record": a push cannot know its own revision, so
	// every later write fills it in (see effective).
	Slot     uint64 `json:"slot,omitempty"`
	Attempts int    `json:"attempts"`
	// Requires are the model files the prompt names (routing).
	Requires []string `json:"requires,omitempty"`
	// Inputs are the input files the prompt names, as the pushing front published them.
	Inputs []inputRef `json:"inputs,omitempty"`
	// Pushed is when the job was queued (Unix ms), for the routing preference.
	Pushed int64  `json:"pushed"`
	Nonce  string `json:"nonce"` // the push's own mark, to recognise a retried write
	Lease  *lease `json:"lease,omitempty"`
}

// lease says who runs a job: the worker, and the token message whose ack deadline
// is the lease (a worker that stops heartbeating loses it when JetStream redelivers
// the token).
type lease struct {
	Worker string `json:"worker"`
	Token  uint64 `json:"token"` // stream sequence of the token message
	Reply  string `json:"reply"` // the token delivery's ack subject
	Gen    string `json:"gen"`   // unique per lease: a commit names the lease it ran under
	Since  int64  `json:"since"` // Unix ms
}

// histPart is a finished prompt's history entry.
type histPart struct {
	Entry json.RawMessage `json:"entry"`
	// Seq orders the history (insertion order); zero means the revision of the
	// write that stored it, as jobPart.Slot.
	Seq uint64 `json:"seq,omitempty"`
	// By is the lease generation that committed the entry ("" for PutHistory).
	By string `json:"by,omitempty"`
}

// effective fills the zero Slot and Seq of a record read at revision rev, so that a
// write carrying the parts forward keeps their places.
func (r *record) effective(rev uint64) *record {
	out := &record{}
	if r.Job != nil {
		j := *r.Job
		if j.Slot == 0 {
			j.Slot = rev
		}
		out.Job = &j
	}
	if r.History != nil {
		h := *r.History
		if h.Seq == 0 {
			h.Seq = rev
		}
		out.History = &h
	}
	return out
}

func (r *record) empty() bool { return r == nil || (r.Job == nil && r.History == nil) }

func encodeRecord(r *record) ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("cluster: encode record: %w", err)
	}
	return b, nil
}

// decodeRecord reads a stored record, keeping numbers as json.Number so 64-bit seeds
// keep every digit.
func decodeRecord(b []byte) (*record, error) {
	var r record
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(&r); err != nil {
		return nil, err
	}
	if r.Job != nil && r.Job.Item.ID == "" {
		return nil, fmt.Errorf("job without a prompt id")
	}
	return &r, nil
}

// decodeEntry reads a stored history entry.
func decodeEntry(b []byte) (*executor.HistoryEntry, error) {
	var e executor.HistoryEntry
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(&e); err != nil {
		return nil, err
	}
	return &e, nil
}

// Keys of the queue bucket: "j.<id>" for ids made of key-safe characters (UUIDs),
// "x.<base64url(id)>" for any other id, "meta.counter" for the number counter.
const (
	keyCounter   = "meta.counter"
	plainPrefix  = "j."
	escapePrefix = "x."
)

var plainID = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

func jobKey(id string) string {
	if plainID.MatchString(id) {
		return plainPrefix + id
	}
	return escapePrefix + base64.RawURLEncoding.EncodeToString([]byte(id))
}

// keyID returns the prompt id of a job key, or false for other keys.
func keyID(key string) (string, bool) {
	switch {
	case len(key) > len(plainPrefix) && key[:len(plainPrefix)] == plainPrefix:
		return key[len(plainPrefix):], true
	case len(key) > len(escapePrefix) && key[:len(escapePrefix)] == escapePrefix:
		b, err := base64.RawURLEncoding.DecodeString(key[len(escapePrefix):])
		if err != nil {
			return "", false
		}
		return string(b), true
	}
	return "", false
}
