package executor

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// Stored records: the one format of every Queue implementation. A job waiting or
// running is stored as a JobRecord, a finished prompt as its HistoryEntry, both JSON.
// The decoders are the line between stored bytes and the engine: whatever the bytes
// (a flipped bit, a torn write, another program's data), they return a record the
// engine can run and the server can answer with, or a *RecordError; they never panic.
// An implementation skips a record that fails to decode, and reports it, instead of
// failing the whole queue or history (see executor/store).

// JobRecord is how a pending or running job is stored: its queue item (ComfyUI's
// list form) plus what the list form leaves out.
type JobRecord struct {
	Job       Job            `json:"item"`
	Sensitive map[string]any `json:"sensitive,omitempty"`
	Attempts  int            `json:"attempts"`
	// Key is the implementation's own place for the job (the bbolt store keeps the
	// job's pending key here, so Fail restores its slot).
	Key []byte `json:"key"`
}

// RecordError is a stored record that does not decode.
type RecordError struct {
	What string // "job" or "history entry"
	Err  error
}

func (e *RecordError) Error() string {
	return "executor: damaged " + e.What + " record: " + e.Err.Error()
}

func (e *RecordError) Unwrap() error { return e.Err }

// EncodeJobRecord encodes r for storage.
func EncodeJobRecord(r *JobRecord) ([]byte, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("executor: encode job %q: %w", r.Job.ID, err)
	}
	return b, nil
}

// DecodeJobRecord decodes a stored job. Besides well-formed JSON it requires what the
// engine relies on: an id of 1 to MaxIDLength bytes, a prompt whose nodes are objects
// with a class_type, a non-negative attempt count. Numbers in the prompt stay
// json.Number, as graph.Prompt expects.
func DecodeJobRecord(b []byte) (*JobRecord, error) {
	var r JobRecord
	if err := decodeStrict(b, &r); err != nil {
		return nil, &RecordError{What: "job", Err: err}
	}
	if err := r.Job.check(); err != nil {
		return nil, &RecordError{What: "job", Err: err}
	}
	if r.Attempts < 0 {
		return nil, &RecordError{What: "job", Err: fmt.Errorf("prompt %q: %d attempts", r.Job.ID, r.Attempts)}
	}
	r.Job.Sensitive, r.Job.Attempts = r.Sensitive, r.Attempts
	return &r, nil
}

// EncodeHistoryEntry encodes e for storage, without the job's sensitive data.
func EncodeHistoryEntry(e *HistoryEntry) ([]byte, error) {
	c := *e
	c.Prompt.Sensitive = nil
	b, err := json.Marshal(&c)
	if err != nil {
		return nil, fmt.Errorf("executor: encode history %q: %w", e.Prompt.ID, err)
	}
	return b, nil
}

// DecodeHistoryEntry decodes a stored history entry; its prompt must pass the checks
// of DecodeJobRecord, and its status must be "success" or "error".
func DecodeHistoryEntry(b []byte) (*HistoryEntry, error) {
	var e HistoryEntry
	if err := decodeStrict(b, &e); err != nil {
		return nil, &RecordError{What: "history entry", Err: err}
	}
	if err := e.Prompt.check(); err != nil {
		return nil, &RecordError{What: "history entry", Err: err}
	}
	if e.Status.StatusStr != StatusSuccess && e.Status.StatusStr != StatusError {
		return nil, &RecordError{What: "history entry", Err: fmt.Errorf("prompt %q: status %q", e.Prompt.ID, e.Status.StatusStr)}
	}
	if e.Outputs == nil {
		e.Outputs = map[string]map[string]any{}
	}
	if e.Meta == nil {
		e.Meta = map[string]NodeMeta{}
	}
	if e.Status.Messages == nil {
		e.Status.Messages = []Message{}
	}
	return &e, nil
}

// decodeStrict decodes one JSON value keeping numbers as json.Number, refusing
// trailing data.
func decodeStrict(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return errors.New("trailing data after the record")
	}
	return nil
}

// check is what a stored job must satisfy to be listed and run.
func (j *Job) check() error {
	if j.ID == "" || len(j.ID) > MaxIDLength {
		return fmt.Errorf("prompt id of %d bytes", len(j.ID))
	}
	for id, n := range j.Prompt {
		if n == nil || n.ClassType == "" {
			return fmt.Errorf("prompt %q: node %q has no class_type", j.ID, id)
		}
	}
	return nil
}
