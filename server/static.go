package server

import (
	"bytes"
	"errors"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

func (s *Server) staticRoutes() {
	s.mux.HandleFunc("GET /", s.serveStatic)
}

// serveStatic serves the editor's files from Options.Static; index.html is served
// uncached so that a new build is picked up at once (server.py get_root).
func (s *Server) serveStatic(w http.ResponseWriter, r *http.Request) {
	if s.opts.Static == nil {
		s.writeError(w, http.StatusNotFound, "not found", "no editor files are configured for this server (forgeflow serve --front-end-root DIR); the API is served under /api/")
		return
	}
	name := strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/")
	if name == "" {
		name = "index.html"
	}
	if !fs.ValidPath(name) {
		s.writeError(w, http.StatusBadRequest, "invalid path")
		return
	}
	st, err := fs.Stat(s.opts.Static, name)
	if err == nil && st.IsDir() {
		name = path.Join(name, "index.html")
		st, err = fs.Stat(s.opts.Static, name)
	}
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			s.writeError(w, http.StatusNotFound, "not found", r.URL.Path)
			return
		}
		s.writeError(w, http.StatusInternalServerError, "cannot read file", err.Error())
		return
	}
	if strings.HasSuffix(name, ".html") {
		setEditorHeaders(w.Header())
	} else {
		w.Header().Set("X-Content-Type-Options", "nosniff")
	}
	if name == "index.html" {
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("Pragma", "no-cache")
		w.Header().Set("Expires", "0")
	}
	f, err := s.opts.Static.Open(name)
	if err != nil {
		s.writeError(w, http.StatusInternalServerError, "cannot read file", err.Error())
		return
	}
	defer f.Close()
	if rs, ok := f.(interface {
		Read([]byte) (int, error)
		Seek(int64, int) (int64, error)
	}); ok {
		http.ServeContent(w, r, name, st.ModTime(), rs)
		return
	}
	data, err := fs.ReadFile(s.opts.Static, name)
	if err != nil {
		s.writeError(w, http.StatusInternalServerError, "cannot read file", err.Error())
		return
	}
	http.ServeContent(w, r, name, st.ModTime(), bytes.NewReader(data))
}
