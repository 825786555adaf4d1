package server

import (
	"image/color"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/gorilla/websocket"
)

const testToken = "s3cret-token-for-tests"

// registeredRoutes reads every route the server registers from its source (the
// s.route and mux.HandleFunc patterns), so that a route added later is covered too:
// method, path, and "api" for an s.route route, which is served under /api too.
func registeredRoutes(t *testing.T) [][3]string {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(s\.route|s\.mux\.HandleFunc)\("([A-Z]+) (/[^"]*)"`)
	param := regexp.MustCompile(`\{[^}]+\}`)
	var out [][3]string
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllStringSubmatch(string(src), -1) {
			api := ""
			if m[1] == "s.route" {
				api = "api"
			}
			out = append(out, [3]string{m[2], param.ReplaceAllString(m[3], "x"), api})
		}
	}
	if len(out) < 30 {
		t.Fatalf("found only %d routes in the source", len(out))
	}
	return out
}

// With --auth-token every route refuses a request without the token (401 with a
// Bearer challenge and a JSON error) and serves one with it; only the editor's own
// files and CORS preflights go without.
func TestAuthEveryRoute(t *testing.T) {
	ts := newTestServer(t, func(o *Options) {
		o.AuthToken = testToken
		o.Static = fstest.MapFS{"index.html": {Data: []byte("<html>editor</html>")}, "assets/app.js": {Data: []byte("js")}}
	})
	for _, r := range registeredRoutes(t) {
		for _, prefix := range []string{"", "/api"} {
			method, path := r[0], r[1]
			if prefix != "" && r[2] != "api" {
				continue // served only where it is registered (/internal, as in ComfyUI)
			}
			if path == "/" {
				if prefix != "" {
					continue
				}
				for _, p := range []string{"/", "/assets/app.js"} {
					if rec := ts.do(t, "GET", p, nil); rec.Code != http.StatusOK {
						t.Errorf("the editor's %s needs no token, got %d", p, rec.Code)
					}
				}
				continue
			}
			target := prefix + path
			t.Run(method+" "+target, func(t *testing.T) {
				rec := ts.do(t, method, target, nil)
				isJSONError(t, rec, http.StatusUnauthorized)
				if !strings.HasPrefix(rec.Header().Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("no Bearer challenge: %v", rec.Header())
				}
				if rec := ts.do(t, method, target, nil, "Authorization", "Bearer wrong"); rec.Code != http.StatusUnauthorized {
					t.Errorf("a wrong token: %d", rec.Code)
				}
				rec = ts.do(t, method, target, nil, "Authorization", "Bearer "+testToken)
				if rec.Code == http.StatusUnauthorized {
					t.Errorf("with the token: 401 %s", rec.Body)
				}
				sep := "?"
				if strings.Contains(target, "?") {
					sep = "&"
				}
				rec = ts.do(t, method, target+sep+"token="+testToken, nil)
				if method == "GET" && rec.Code == http.StatusUnauthorized {
					t.Errorf("GET with ?token=: 401")
				}
				if method != "GET" && rec.Code != http.StatusUnauthorized {
					t.Errorf("%s with ?token= only: %d, want 401 (the query token is for GETs)", method, rec.Code)
				}
			})
		}
	}
	// Preflights carry no credentials.
	if rec := ts.do(t, "OPTIONS", "/prompt", nil); rec.Code == http.StatusUnauthorized {
		t.Error("a CORS preflight needs no token")
	}
}

// The token in the query is for the browser's websocket and image URLs; handlers never
// see it.
func TestAuthQueryTokenWebsocketAndView(t *testing.T) {
	ts := newTestServer(t, func(o *Options) { o.AuthToken = testToken })
	writeFile(t, filepath.Join(ts.dirs.Output, "a.png"), pngBytes(t, 2, 2, func(x, y int) color.NRGBA { return color.NRGBA{9, 9, 9, 255} }))
	if rec := ts.do(t, "GET", "/view?filename=a.png&type=output&token="+testToken, nil); rec.Code != http.StatusOK {
		t.Fatalf("/view with ?token=: %d %s", rec.Code, rec.Body)
	}
	if rec := ts.do(t, "GET", "/view?filename=a.png&type=output", nil); rec.Code != http.StatusUnauthorized {
		t.Fatalf("/view without the token: %d", rec.Code)
	}
	var seen string
	h := ts.authMiddleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seen = r.URL.RawQuery + " " + r.RequestURI }))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/view?filename=a.png&token="+testToken, nil))
	if strings.Contains(seen, testToken) || !strings.Contains(seen, "filename=a.png") {
		t.Fatalf("the handler saw %q", seen)
	}

	srv := httptest.NewServer(ts)
	defer srv.Close()
	u := "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws?clientId=c1"
	if _, resp, err := websocket.DefaultDialer.Dial(u, nil); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("websocket without the token: %v %v", err, resp)
	}
	c, _, err := websocket.DefaultDialer.Dial(u+"&token="+testToken, nil)
	if err != nil {
		t.Fatalf("websocket with ?token=: %v", err)
	}
	c.Close()
	c, _, err = websocket.DefaultDialer.Dial(u, http.Header{"Authorization": {"Bearer " + testToken}})
	if err != nil {
		t.Fatalf("websocket with the header: %v", err)
	}
	c.Close()
}

// Without a token nothing changes: every route answers as before.
func TestNoAuthTokenNoCheck(t *testing.T) {
	ts := newTestServer(t, nil)
	if rec := ts.do(t, "GET", "/system_stats", nil); rec.Code != http.StatusOK {
		t.Fatalf("/system_stats: %d", rec.Code)
	}
}
