package server

import (
	"compress/gzip"
	"net/http"
	"strings"
)

// compressMiddleware gzips JSON and plain-text answers for clients that accept it
// (--enable-compress-response-body; server.py compress_body). Images, files and
// websockets pass through untouched.
func (s *Server) compressMiddleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") || r.Header.Get("Upgrade") != "" {
			next.ServeHTTP(w, r)
			return
		}
		gw := &gzipWriter{ResponseWriter: w}
		defer gw.close()
		next.ServeHTTP(gw, r)
	})
}

// gzipWriter decides at WriteHeader time whether to compress, from the content type.
type gzipWriter struct {
	http.ResponseWriter
	gz      *gzip.Writer
	decided bool
}

func (g *gzipWriter) WriteHeader(code int) {
	if !g.decided {
		g.decided = true
		h := g.Header()
		ct := h.Get("Content-Type")
		if (strings.HasPrefix(ct, "application/json") || strings.HasPrefix(ct, "text/plain")) && h.Get("Content-Encoding") == "" &&
			code != http.StatusNoContent && code != http.StatusNotModified {
			h.Del("Content-Length")
			h.Set("Content-Encoding", "gzip")
			h.Add("Vary", "Accept-Encoding")
			g.gz = gzip.NewWriter(g.ResponseWriter)
		}
	}
	g.ResponseWriter.WriteHeader(code)
}

func (g *gzipWriter) Write(b []byte) (int, error) {
	if !g.decided {
		g.WriteHeader(http.StatusOK)
	}
	if g.gz != nil {
		return g.gz.Write(b)
	}
	return g.ResponseWriter.Write(b)
}

func (g *gzipWriter) close() {
	if g.gz != nil {
		_ = g.gz.Close()
	}
}

// Unwrap lets http.ResponseController reach the connection (websocket hijacking).
func (g *gzipWriter) Unwrap() http.ResponseWriter { return g.ResponseWriter }
