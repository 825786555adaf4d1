package cluster

import (
	"testing"
)

// FuzzDecode: any bytes in a queue record or on the events subject give a value or
// an error, never a panic; a record that decodes re-encodes.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"job":{"item":[0,"a",{"1":{"class_type":"Foo","inputs":{"seed":18446744073709551615}}},{},["1"]],"attempts":1,"lease":{"worker":"w","token":3}}}`))
	f.Add([]byte(`{"history":{"entry":{"prompt":[0,"a",{},{},[]],"outputs":{},"status":{"status_str":"success","completed":true,"messages":[["execution_start",{"prompt_id":"a"}]]},"meta":{}},"seq":4}}`))
	f.Add([]byte(`{"type":"executed","data":{"node":"2","output":{"images":[{"filename":"a.png","subfolder":"w","type":"output"}]},"prompt_id":"a"},"from":"w"}`))
	f.Add([]byte(`{"type":"preview","preview":{"format":"JPEG","image":"AAEC","prompt_id":"a","node_id":"3"},"from":"w"}`))
	f.Add([]byte(`{"type":"progress_state","data":{"prompt_id":"a","nodes":{"1":{"value":1,"max":2,"state":"running"}}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if rec, err := decodeRecord(b); err == nil {
			if _, err := encodeRecord(rec); err != nil {
				t.Fatalf("a decoded record does not encode: %v", err)
			}
			if rec.History != nil {
				decodeEntry(rec.History.Entry)
			}
		}
		if ev, _, err := decodeEvent(b); err == nil {
			if _, err := (&Queue{}).encodeEvent(ev); err != nil {
				t.Fatalf("a decoded event does not encode: %v", err)
			}
		}
	})
}
