package server

import (
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"strings"

	"github.com/forgeflow/forgeflow/weights/safetensors"
)

// Models is the model folder layout as the server sees it. *folders.Paths
// (weights/folders) implements it.
type Models interface {
	// Folders returns the folder names (GET /models).
	Folders() []string
	// Has reports whether folder is known.
	Has(folder string) bool
	// List returns the model names of a folder, slash-separated and relative to it.
	List(folder string) ([]string, error)
	// Resolve returns the file path of a model name, refusing names that leave the
	// folder.
	Resolve(folder, name string) (string, error)
}

// maxMetadataHeader is the header size /view_metadata reads at most, as ComfyUI's
// safetensors_header(max_size=1024*1024).
const maxMetadataHeader = 1 << 20

func (s *Server) modelRoutes() {
	s.route("GET /embeddings", s.getEmbeddings)
	s.route("GET /models", s.getModelFolders)
	s.route("GET /models/{folder}", s.getModels)
	s.route("GET /view_metadata/{folder_name}", s.getViewMetadata)
}

// getEmbeddings lists the embeddings folder without file extensions.
func (s *Server) getEmbeddings(w http.ResponseWriter, r *http.Request) {
	out := []string{}
	if s.opts.Models != nil && s.opts.Models.Has("embeddings") {
		names, err := s.opts.Models.List("embeddings")
		if err != nil {
			s.writeError(w, http.StatusInternalServerError, "cannot list embeddings", err.Error())
			return
		}
		for _, n := range names {
			out = append(out, strings.TrimSuffix(n, path.Ext(n)))
		}
	}
	s.writeJSON(w, http.StatusOK, out)
}

func (s *Server) getModelFolders(w http.ResponseWriter, r *http.Request) {
	out := []string{}
	if s.opts.Models != nil {
		out = append(out, s.opts.Models.Folders()...)
	}
	s.writeJSON(w, http.StatusOK, out)
}

func (s *Server) getModels(w http.ResponseWriter, r *http.Request) {
	folder := r.PathValue("folder")
	if s.opts.Models == nil || !s.opts.Models.Has(folder) {
		s.writeError(w, http.StatusNotFound, "unknown model folder", folder)
		return
	}
	names, err := s.opts.Models.List(folder)
	if err != nil {
		s.writeError(w, http.StatusInternalServerError, "cannot list models", err.Error())
		return
	}
	if names == nil {
		names = []string{}
	}
	s.writeJSON(w, http.StatusOK, names)
}

// getViewMetadata answers the "__metadata__" map of a .safetensors model, or 404 when
// the file, its metadata or a readable header is missing (server.py view_metadata).
func (s *Server) getViewMetadata(w http.ResponseWriter, r *http.Request) {
	folder := r.PathValue("folder_name")
	name := r.URL.Query().Get("filename")
	if name == "" || !strings.HasSuffix(name, ".safetensors") {
		s.writeError(w, http.StatusNotFound, "filename must name a .safetensors file")
		return
	}
	if _, err := relPath(name); err != nil {
		s.writeError(w, http.StatusBadRequest, "invalid filename", err.Error())
		return
	}
	if s.opts.Models == nil || !s.opts.Models.Has(folder) {
		s.writeError(w, http.StatusNotFound, "unknown model folder", folder)
		return
	}
	p, err := s.opts.Models.Resolve(folder, name)
	if err != nil {
		s.writeError(w, http.StatusNotFound, "model not found", err.Error())
		return
	}
	if n, err := headerLength(p); err != nil || n > maxMetadataHeader {
		s.writeError(w, http.StatusNotFound, "cannot read safetensors header", fmt.Sprintf("header length %d (limit %d): %v", n, maxMetadataHeader, err))
		return
	}
	h, err := safetensors.ReadHeader(p)
	if err != nil {
		s.writeError(w, http.StatusNotFound, "cannot read safetensors header", err.Error())
		return
	}
	if h.Metadata == nil {
		s.writeError(w, http.StatusNotFound, "no __metadata__ in file")
		return
	}
	s.writeJSON(w, http.StatusOK, h.Metadata)
}

// headerLength reads the 8-byte little-endian header length of a safetensors file, so
// that a huge header is refused before it is read.
func headerLength(path string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var b [8]byte
	if _, err := io.ReadFull(f, b[:]); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}
