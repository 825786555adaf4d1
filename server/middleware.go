package server

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// originMiddleware guards against requests a browser makes on behalf of another site:
//
//   - DNS rebinding: when the server listens on loopback addresses only, a request
//     whose Host is neither a loopback name nor a listen address nor an allowed host
//     is refused (a page on evil.example whose name was rebound to 127.0.0.1 sends
//     Host: evil.example).
//   - ComfyUI's origin check (server.py create_origin_only_middleware), without
//     --enable-cors-header: a request whose Host is loopback and whose Origin names
//     another host is refused.
//   - State-changing requests (anything but GET, HEAD and OPTIONS, and websocket
//     handshakes) from an opaque origin (Origin: null: sandboxed frames, data: URLs)
//     or a file:// page, or marked Sec-Fetch-Site: cross-site, are refused: ComfyUI
//     accepted these, so any web page could queue prompts on a local server.
//
// A request whose origin CORS was enabled for (--enable-cors-header ORIGIN, or "*")
// passes the last two checks. Every refusal is a 403 with a JSON error.
func (s *Server) originMiddleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.hosts.allows(r.Host) {
			s.log.Warn("request refused: host not allowed", "host", r.Host, "remote", r.RemoteAddr)
			s.writeError(w, http.StatusForbidden, "host not allowed",
				fmt.Sprintf("this server listens on loopback only and does not answer to host %q (forgeflow serve --allowed-hosts)", r.Host))
			return
		}
		origin := r.Header.Get("Origin")
		if s.opts.CORSOrigin != "" {
			h := w.Header()
			h.Set("Access-Control-Allow-Origin", s.opts.CORSOrigin)
			h.Set("Access-Control-Allow-Methods", "POST, GET, DELETE, PUT, OPTIONS")
			h.Set("Access-Control-Allow-Headers", "Content-Type, Authorization")
			h.Set("Access-Control-Allow-Credentials", "true")
		}
		if !s.corsAllows(origin) {
			if reason := s.crossSiteRefusal(r, origin); reason != "" {
				s.log.Warn("request refused: cross-site", "reason", reason, "host", r.Host, "origin", origin,
					"sec_fetch_site", r.Header.Get("Sec-Fetch-Site"), "method", r.Method, "path", r.URL.Path)
				s.writeError(w, http.StatusForbidden, reason)
				return
			}
		}
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusOK)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// corsAllows reports whether --enable-cors-header lets origin through: "*" lets every
// origin through, otherwise only the one named.
func (s *Server) corsAllows(origin string) bool {
	c := s.opts.CORSOrigin
	return c == "*" || (c != "" && origin != "" && strings.EqualFold(strings.TrimSuffix(c, "/"), origin))
}

// crossSiteRefusal says why a request must be refused, or "" when it may go on.
func (s *Server) crossSiteRefusal(r *http.Request, origin string) string {
	if s.opts.CORSOrigin == "" && origin != "" && r.Host != "" && !sameOrigin(r.Host, origin) {
		return "origin does not match host"
	}
	if !stateChanging(r) {
		return ""
	}
	if origin == "null" {
		return "requests from an opaque origin (Origin: null) may not change state"
	}
	if u, err := url.Parse(origin); origin != "" && (err != nil || (u.Scheme != "http" && u.Scheme != "https")) {
		return "requests from a page that is not http or https may not change state"
	}
	if strings.EqualFold(r.Header.Get("Sec-Fetch-Site"), "cross-site") {
		return "cross-site requests may not change state"
	}
	return ""
}

// stateChanging reports whether a request can change the server's state: every
// method but GET, HEAD and OPTIONS, and websocket handshakes (a websocket carries the
// prompt's events, and will carry prompts).
func stateChanging(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		return strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
	case http.MethodOptions:
		return false
	}
	return true
}

// sameOrigin reports whether a request may go on: true unless host is a loopback name
// and origin names another host. As in ComfyUI, a side without a port is compared by
// host name only.
func sameOrigin(host, origin string) bool {
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	hostURL, err := url.Parse("//" + strings.ToLower(host))
	if err != nil {
		return false
	}
	if !isLoopback(hostURL.Hostname()) {
		return true
	}
	hostDomain := strings.ToLower(host)
	originDomain := strings.ToLower(u.Host)
	if u.Port() == "" {
		hostDomain = hostURL.Hostname()
	}
	if hostURL.Port() == "" {
		originDomain = strings.ToLower(u.Hostname())
	}
	if hostDomain == "" || originDomain == "" {
		return true
	}
	return hostDomain == originDomain
}

// isLoopback reports whether h is a loopback IP literal or a localhost name. Unlike
// ComfyUI it does not resolve other names through DNS, which would put a lookup on every
// request's path.
func isLoopback(h string) bool {
	if ip := net.ParseIP(h); ip != nil {
		return ip.IsLoopback()
	}
	h = strings.TrimSuffix(strings.ToLower(h), ".")
	return h == "localhost" || strings.HasSuffix(h, ".localhost")
}

// hostCheck is the DNS rebinding check: on when every listen address is loopback.
type hostCheck struct {
	on      bool
	any     bool
	allowed map[string]bool
}

// newHostCheck builds the check from the listen addresses (host:port or host) and the
// extra allowed host names (each may be a comma-separated list; "*": any).
func newHostCheck(listen, allowed []string) hostCheck {
	h := hostCheck{allowed: map[string]bool{}}
	for _, a := range strings.Split(strings.Join(allowed, ","), ",") {
		a = strings.ToLower(strings.TrimSpace(a))
		if a == "*" {
			h.any = true
		}
		if a != "" {
			h.allowed[strings.TrimSuffix(a, ".")] = true
		}
	}
	h.on = len(listen) > 0
	for _, l := range listen {
		host := l
		if hh, _, err := net.SplitHostPort(l); err == nil {
			host = hh
		}
		if !isLoopback(host) {
			h.on = false
		}
		h.allowed[strings.ToLower(host)] = true
	}
	return h
}

// allows reports whether a request with this Host header may go on.
func (h hostCheck) allows(host string) bool {
	if !h.on || h.any || host == "" {
		return true
	}
	name := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		name = hh
	}
	name = strings.TrimSuffix(strings.ToLower(strings.Trim(name, "[]")), ".")
	return isLoopback(name) || h.allowed[name]
}
