//go:build integration

package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/forgeflow/forgeflow/internal/testenv"
)

// TestServeMultiUser runs serve --multi-user and checks that the flag reaches the
// server: nobody is known at first, POST /users adds a user, the comfy-user header
// selects it, and another header value is refused.
func TestServeMultiUser(t *testing.T) {
	testenv.EndToEnd(t)
	url, stop := startServe(t, "--base-directory", t.TempDir(), "--multi-user")
	defer stop()
	call := func(method, path, body, user string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, url+path, strings.NewReader(body))
		if user != "" {
			req.Header.Set("Comfy-User", user)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := call("GET", "/api/settings", "", ""); code != http.StatusUnauthorized {
		t.Errorf("settings without a user: %d", code)
	}
	code, body := call("POST", "/api/users", `{"username": "ada"}`, "")
	var id string
	if code != 200 || json.Unmarshal([]byte(body), &id) != nil {
		t.Fatalf("POST /users: %d %s", code, body)
	}
	if code, body := call("POST", "/api/settings/Comfy.Locale", `"fr"`, id); code != 200 {
		t.Fatalf("setting as %s: %d %s", id, code, body)
	}
	if code, body := call("GET", "/api/settings", "", id); code != 200 || !strings.Contains(body, `"fr"`) {
		t.Errorf("settings as %s: %d %s", id, code, body)
	}
	if code, _ := call("GET", "/api/userdata?dir=.", "", "../"+id); code != http.StatusForbidden {
		t.Errorf("traversal user: %d", code)
	}
	if code, body := call("GET", "/api/users", "", ""); code != 200 || !strings.Contains(body, `"ada"`) {
		t.Errorf("GET /users: %d %s", code, body)
	}
}
