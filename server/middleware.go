package server

import (
	"net"
	"net/http"
	"net/url"
	"strings"
)

// originMiddleware applies --enable-cors-header, or without it ComfyUI's origin check
// (server.py create_origin_only_middleware): a browser page on another site must not be
// able to queue prompts on a server bound to a loopback address, so a request whose Host
// is loopback and whose Origin names a different host is refused with 403.
func (s *Server) originMiddleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.opts.CORSOrigin != "" {
			h := w.Header()
			h.Set("Access-Control-Allow-Origin", s.opts.CORSOrigin)
			h.Set("Access-Control-Allow-Methods", "POST, GET, DELETE, PUT, OPTIONS")
			h.Set("Access-Control-Allow-Headers", "Content-Type, Authorization")
			h.Set("Access-Control-Allow-Credentials", "true")
		} else if origin := r.Header.Get("Origin"); origin != "" && r.Host != "" && !sameOrigin(r.Host, origin) {
			s.log.Warn("request with non matching host and origin", "host", r.Host, "origin", origin)
			s.writeError(w, http.StatusForbidden, "origin does not match host")
			return
		}
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusOK)
			return
		}
		next.ServeHTTP(w, r)
	})
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
