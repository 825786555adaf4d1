package server

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMultiUser checks --multi-user (Options.MultiUser) as ComfyUI 0.3.64's
// app/user_manager.py: GET/POST /users, the comfy-user header choosing whose settings
// and userdata a request reads and writes (USER/ID), and requests naming no known user
// refused (401 on the settings routes and 403 on /v2/userdata, as ComfyUI; 403 on the
// other userdata routes, where ComfyUI fails with 500).
func TestMultiUser(t *testing.T) {
	ts := newTestServer(t, func(o *Options) { o.MultiUser = true })
	// Without users.json nobody is known, not even "default".
	jsonEqual(t, ts.do(t, "GET", "/users", nil).Body.Bytes(), `{"storage": "server", "users": {}}`)
	for target, status := range map[string]int{"/settings": 401, "/api/settings/x": 401, "/api/userdata?dir=workflows": 403,
		"/v2/userdata": 403, "/userdata/a.json": 403} {
		for _, hdr := range [][]string{nil, {"Comfy-User", "default"}} {
			isJSONError(t, ts.do(t, "GET", target, nil, hdr...), status)
		}
	}

	newUser := func(name string) string {
		t.Helper()
		rec := ts.do(t, "POST", "/users", strings.NewReader(`{"username": "`+name+`"}`))
		var id string
		if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &id) != nil {
			t.Fatalf("POST /users %s: %d %s", name, rec.Code, rec.Body)
		}
		return id
	}
	alice, bob := newUser("alice"), newUser("bob")
	jsonEqual(t, ts.do(t, "GET", "/api/users", nil).Body.Bytes(),
		`{"storage": "server", "users": {"`+alice+`": "alice", "`+bob+`": "bob"}}`)
	if rec := ts.do(t, "POST", "/users", strings.NewReader(`{"username": "alice"}`)); rec.Code != 400 {
		t.Errorf("duplicate user: %d", rec.Code)
	}

	as := func(user string) []string { return []string{"Comfy-User", user} }
	steps := []struct {
		name, method, target, body, user string
		status                           int
		want                             string // JSON answer, when not empty
	}{
		{"alice sets a setting", "POST", "/settings/Comfy.Theme", `"dark"`, alice, 200, ""},
		{"bob sets his", "POST", "/settings", `{"Comfy.Theme": "light"}`, bob, 200, ""},
		{"alice reads hers", "GET", "/settings", "", alice, 200, `{"Comfy.Theme": "dark"}`},
		{"bob reads his", "GET", "/api/settings/Comfy.Theme", "", bob, 200, `"light"`},
		{"alice saves a workflow", "POST", "/userdata/workflows%2Fw.json", `{"nodes": []}`, alice, 200, ""},
		{"alice lists it", "GET", "/userdata?dir=workflows", "", alice, 200, `["w.json"]`},
		{"bob has no workflows", "GET", "/userdata?dir=workflows", "", bob, 404, ""},
		{"bob cannot read it", "GET", "/userdata/workflows%2Fw.json", "", bob, 404, ""},
		{"bob cannot climb to it", "GET", "/userdata/..%2F" + alice + "%2Fworkflows%2Fw.json", "", bob, 403, ""},
		{"bob cannot climb, encoded twice", "GET", "/userdata/%252e%252e%252F" + alice + "%252Fworkflows%252Fw.json", "", bob, 403, ""},
		{"bob cannot list users.json", "GET", "/v2/userdata?path=..", "", bob, 400, ""},
		{"alice moves it", "POST", "/userdata/workflows%2Fw.json/move/workflows%2Fv.json", "", alice, 200, ""},
		{"alice deletes it", "DELETE", "/userdata/workflows%2Fv.json", "", alice, 204, ""},
		{"an unknown user", "GET", "/settings", "", "mallory", 401, ""},
		{"a user's name is not its id", "GET", "/settings", "", "alice", 401, ""},
		{"traversal in the header", "POST", "/settings/k", "1", "../" + alice, 401, ""},
		{"absolute header", "GET", "/userdata?dir=workflows", "", filepath.Join(ts.dirs.User, alice), 403, ""},
		{"encoded header", "GET", "/v2/userdata", "", "%2e%2e%2f" + alice, 403, ""},
		{"unknown user posts", "POST", "/userdata/x.json", `{}`, "nobody", 403, ""},
		{"unknown user's bad settings body", "POST", "/settings", `not json`, "nobody", 401, ""},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			rec := ts.do(t, st.method, st.target, strings.NewReader(st.body), as(st.user)...)
			if rec.Code != st.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, st.status, rec.Body)
			}
			if st.want != "" {
				jsonEqual(t, rec.Body.Bytes(), st.want)
			}
		})
	}
	for user, want := range map[string]string{alice: "dark", bob: "light"} {
		b, err := os.ReadFile(filepath.Join(ts.dirs.User, user, settingsFile))
		if err != nil || !strings.Contains(string(b), want) {
			t.Errorf("%s's settings file: %s %v", user, b, err)
		}
	}
	if _, err := os.Stat(filepath.Join(ts.dirs.User, "x.json")); err == nil {
		t.Error("an unknown user's file was written")
	}
}

// TestMultiUserHandEditedUsers checks that ids in a hand-edited users.json that are no
// plain folder name, or a system user's, serve nothing, and that a NUL reaching the
// handler is refused.
func TestMultiUserHandEditedUsers(t *testing.T) {
	ts := newTestServer(t, func(o *Options) { o.MultiUser = true })
	writeFile(t, filepath.Join(ts.dirs.User, "secret.json"), []byte(`{"k": 1}`))
	writeFile(t, filepath.Join(ts.dirs.User, "users.json"),
		[]byte(`{"..": "up", ".": "here", "__system": "s", "a/b": "slash", "a\\b": "back", "x\u0000": "nul", "ok": "fine"}`))
	for _, user := range []string{"..", ".", "__system", "a/b", `a\b`, "x\x00", ""} {
		req := httptest.NewRequest("GET", "/userdata/secret.json", nil)
		req.Header["Comfy-User"] = []string{user}
		rec := httptest.NewRecorder()
		ts.ServeHTTP(rec, req)
		if rec.Code != http.StatusForbidden {
			t.Errorf("user %q: status %d: %s", user, rec.Code, rec.Body)
		}
	}
	if rec := ts.do(t, "GET", "/settings", nil, "Comfy-User", ".."); rec.Code != 401 {
		t.Errorf("settings of user \"..\": %d", rec.Code)
	}
	if rec := ts.do(t, "GET", "/settings", nil, "Comfy-User", "ok"); rec.Code != 200 {
		t.Errorf("a listed user: %d", rec.Code)
	}
}

// TestSingleUserIgnoresHeader: without --multi-user every request is the default
// user's, whatever comfy-user says.
func TestSingleUserIgnoresHeader(t *testing.T) {
	ts := newTestServer(t, nil)
	for _, user := range []string{"", "someone", "../x"} {
		if rec := ts.do(t, "POST", "/settings/k", strings.NewReader(`"`+user+`"`), "Comfy-User", user); rec.Code != 200 {
			t.Fatalf("user %q: %d %s", user, rec.Code, rec.Body)
		}
	}
	jsonEqual(t, ts.do(t, "GET", "/settings", nil, "Comfy-User", "nobody").Body.Bytes(), `{"k": "../x"}`)
	jsonEqual(t, ts.do(t, "GET", "/users", nil).Body.Bytes(), `{"storage": "server", "migrated": true}`)
}
