package executor_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/forgeflow/forgeflow/executor"
	"github.com/forgeflow/forgeflow/graph"
)

var testTime = time.Unix(1700000000, 0)

func storedJob() *executor.JobRecord {
	return &executor.JobRecord{
		Job: executor.Job{Number: 3, ID: "p1",
			Prompt:    graph.Prompt{"1": {ClassType: "Sink", Inputs: map[string]any{"seed": json.Number("18446744073709551615"), "in": graph.NewLink("2", 0)}}, "2": {ClassType: "Const", Inputs: map[string]any{}}},
			ExtraData: map[string]any{"client_id": "c"}, Outputs: []string{"1"}},
		Sensitive: map[string]any{"api_key_comfy_org": "k"},
		Attempts:  1,
		Key:       []byte{1, 2, 3},
	}
}

func TestRecordRoundTrip(t *testing.T) {
	b, err := executor.EncodeJobRecord(storedJob())
	if err != nil {
		t.Fatal(err)
	}
	r, err := executor.DecodeJobRecord(b)
	if err != nil {
		t.Fatal(err)
	}
	if r.Job.ID != "p1" || r.Attempts != 1 || r.Job.Attempts != 1 || r.Sensitive["api_key_comfy_org"] != "k" || r.Job.Sensitive["api_key_comfy_org"] != "k" ||
		string(r.Key) != "\x01\x02\x03" || r.Job.Prompt["1"].Inputs["seed"] != json.Number("18446744073709551615") {
		t.Fatalf("decoded %+v", r)
	}
	entry := executor.ErrorEntry(&r.Job, "X", "m", testTime)
	eb, err := executor.EncodeHistoryEntry(entry)
	if err != nil {
		t.Fatal(err)
	}
	e, err := executor.DecodeHistoryEntry(eb)
	if err != nil {
		t.Fatal(err)
	}
	if e.Prompt.ID != "p1" || e.Prompt.Sensitive != nil || e.Status.StatusStr != executor.StatusError {
		t.Fatalf("entry %+v", e)
	}
}

// TestDecodeRefusesWhatTheEngineCannotUse: well-formed JSON that the engine would trip
// on is a *RecordError too.
func TestDecodeRefusesWhatTheEngineCannotUse(t *testing.T) {
	for _, tc := range []struct{ name, rec string }{
		{"not json", `{"item": [1, "p"`},
		{"trailing data", `{"item": [1, "p", {}, {}, []]} {}`},
		{"null item", `{"item": null}`},
		{"short item", `{"item": [1, "p"]}`},
		{"empty id", `{"item": [1, "", {}, {}, []]}`},
		{"null node", `{"item": [1, "p", {"1": null}, {}, []]}`},
		{"node without class", `{"item": [1, "p", {"1": {"inputs": {}}}, {}, []]}`},
		{"negative attempts", `{"item": [1, "p", {}, {}, []], "attempts": -1}`},
		{"number as string", `{"item": ["1", "p", {}, {}, []]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := executor.DecodeJobRecord([]byte(tc.rec))
			var re *executor.RecordError
			if !errors.As(err, &re) {
				t.Fatalf("err = %v, want a RecordError", err)
			}
		})
	}
	for _, rec := range []string{`{}`, `{"prompt": [1, "p", {}, {}, []], "status": {"status_str": "maybe"}}`, `[]`, `null`} {
		if _, err := executor.DecodeHistoryEntry([]byte(rec)); err == nil {
			t.Errorf("history %s decoded", rec)
		}
	}
}

// FuzzDecodeJobRecord: any bytes decode to an error or to a record that encodes and
// decodes again to the same record; nothing panics.
func FuzzDecodeJobRecord(f *testing.F) {
	b, _ := executor.EncodeJobRecord(storedJob())
	f.Add(b)
	f.Add([]byte(`{"item": [1e308, "p", {"1": {"class_type": "A", "inputs": {"x": [1, 2, 3]}}}, {"extra_pnginfo": {"workflow": {}}}, ["1"]], "key": "AA=="}`))
	f.Add([]byte(`{"item": [-0.5, "é", {}, null, null], "sensitive": {"a": [null]}, "attempts": 9}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := executor.DecodeJobRecord(data)
		if err != nil {
			return
		}
		again, err := executor.EncodeJobRecord(r)
		if err != nil {
			t.Fatalf("a decoded record does not encode: %v", err)
		}
		r2, err := executor.DecodeJobRecord(again)
		if err != nil {
			t.Fatalf("a re-encoded record does not decode: %v\n%s", err, again)
		}
		if r2.Job.ID != r.Job.ID || r2.Attempts != r.Attempts || len(r2.Job.Prompt) != len(r.Job.Prompt) || !reflect.DeepEqual(r2.Key, r.Key) {
			t.Fatalf("round trip changed the record: %+v → %+v", r, r2)
		}
		if _, err := json.Marshal(r.Job); err != nil {
			t.Fatalf("the job does not marshal for /queue: %v", err)
		}
	})
}

// FuzzDecodeHistoryEntry: any bytes decode to an error or to an entry that /history
// can write; nothing panics.
func FuzzDecodeHistoryEntry(f *testing.F) {
	r := storedJob()
	good, _ := executor.EncodeHistoryEntry(executor.ErrorEntry(&r.Job, "ProcessStopped", "m", testTime))
	f.Add(good)
	f.Add([]byte(`{"prompt": [0, "x", {}, {}, []], "outputs": {"1": {"images": [{"filename": "a.png"}]}}, "status": {"status_str": "success", "completed": true, "messages": [["execution_start", {"prompt_id": "x"}]]}, "meta": {"1": {"node_id": "1"}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := executor.DecodeHistoryEntry(data)
		if err != nil {
			return
		}
		b, err := json.Marshal(e)
		if err != nil {
			t.Fatalf("a decoded entry does not marshal for /history: %v", err)
		}
		if _, err := executor.DecodeHistoryEntry(b); err != nil {
			t.Fatalf("a marshalled entry does not decode: %v\n%s", err, b)
		}
	})
}
