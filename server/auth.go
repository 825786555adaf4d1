package server

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
)

// Access tokens (Options.AuthToken; forgeflow serve --auth-token). ComfyUI has no
// authentication and its users put a proxy in front of it; forgeflow checks a token
// itself so that a server reachable from other machines is not open to them.
//
// A request carries the token as "Authorization: Bearer TOKEN", or, for GET and HEAD
// requests only, as a "token" query parameter: a browser cannot add a header to a
// websocket handshake or to an <img src>, so the editor appends it to /ws and to the
// image URLs it builds. The parameter is removed before the request goes on, so no
// handler or log line sees it. The editor's own files (what the catch-all "GET /"
// serves: the page that asks for the token) need none, and neither does a CORS
// preflight, which browsers send without credentials.

// authQueryParam is the query parameter that may carry the token.
const authQueryParam = "token"

// authMiddleware refuses requests without the token with 401, when a token is set.
func (s *Server) authMiddleware(next http.Handler) http.Handler {
	if s.opts.AuthToken == "" {
		return next
	}
	want := sha256.Sum256([]byte(s.opts.AuthToken))
	matches := func(given string) bool {
		got := sha256.Sum256([]byte(given))
		return given != "" && subtle.ConstantTimeCompare(got[:], want[:]) == 1
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ok := false
		if h := r.Header.Get("Authorization"); h != "" {
			scheme, tok, _ := strings.Cut(h, " ")
			ok = strings.EqualFold(scheme, "Bearer") && matches(strings.TrimSpace(tok))
		}
		q := r.URL.Query()
		if q.Has(authQueryParam) {
			if !ok && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
				ok = matches(q.Get(authQueryParam))
			}
			q.Del(authQueryParam)
			r2 := r.Clone(r.Context())
			r2.URL.RawQuery = q.Encode()
			r2.RequestURI = r2.URL.RequestURI()
			r = r2
		}
		if ok || r.Method == http.MethodOptions || s.isEditorFile(r) {
			next.ServeHTTP(w, r)
			return
		}
		s.log.Debug("request refused: no valid token", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
		w.Header().Set("WWW-Authenticate", `Bearer realm="forgeflow"`)
		s.writeError(w, http.StatusUnauthorized, "authentication required",
			"this server needs its access token: send 'Authorization: Bearer TOKEN' (or ?token=TOKEN on a GET); the token is the one forgeflow serve was started with (--auth-token or --auth-token-file)")
	})
}

// isEditorFile reports whether the request is for one of the editor's files: a GET
// or HEAD that no API route takes, which the catch-all static route answers.
func (s *Server) isEditorFile(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	_, pattern := s.mux.Handler(r)
	return pattern == "GET /"
}
