package server

import (
	"encoding/binary"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
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
	// Dirs returns the directories searched for folder, first one first.
	Dirs(folder string) ([]string, error)
}

// maxMetadataHeader is the header size /view_metadata reads at most, as ComfyUI's
// safetensors_header(max_size=1024*1024).
const maxMetadataHeader = 1 << 20

func (s *Server) modelRoutes() {
	s.route("GET /embeddings", s.getEmbeddings)
	s.route("GET /models", s.getModelFolders)
	s.route("GET /models/{folder}", s.getModels)
	s.route("GET /view_metadata/{folder_name}", s.getViewMetadata)
	s.route("GET /experiment/models", s.getExperimentFolders)
	s.route("GET /experiment/models/{folder}", s.getExperimentModels)
	s.downloadRoutes()
}

// experimentHidden are the folders GET /experiment/models leaves out (app/model_manager.py).
var experimentHidden = map[string]bool{"configs": true, "custom_nodes": true}

// modelExts are ComfyUI's supported_pt_extensions, the files the model library lists.
var modelExts = map[string]bool{".ckpt": true, ".pt": true, ".pt2": true, ".bin": true, ".pth": true, ".safetensors": true, ".pkl": true, ".sft": true}

// getExperimentFolders is GET /experiment/models: [{"name", "folders": [dirs]}], the
// model library's folder list.
func (s *Server) getExperimentFolders(w http.ResponseWriter, r *http.Request) {
	type entry struct {
		Name    string   `json:"name"`
		Folders []string `json:"folders"`
	}
	out := []entry{}
	if s.opts.Models != nil {
		for _, f := range s.opts.Models.Folders() {
			if experimentHidden[f] {
				continue
			}
			dirs, err := s.opts.Models.Dirs(f)
			if err != nil {
				continue
			}
			out = append(out, entry{Name: f, Folders: append([]string{}, dirs...)})
		}
	}
	s.writeJSON(w, http.StatusOK, out)
}

// modelFile is one entry of GET /experiment/models/{folder}.
type modelFile struct {
	Name      string  `json:"name"`
	PathIndex int     `json:"pathIndex"`
	Modified  float64 `json:"modified"`
	Created   float64 `json:"created"`
	Size      int64   `json:"size"`
}

// getExperimentModels lists a folder's model files per directory, with the index of the
// directory they were found in (app/model_manager.py get_model_file_list): hidden files
// and folders and .git are skipped and only model extensions are listed. The names are
// the folder's listing (Models.List), so symbolic links are followed exactly as far as
// the listing follows them, as in ComfyUI; a name found in several directories is
// listed once for each.
func (s *Server) getExperimentModels(w http.ResponseWriter, r *http.Request) {
	folder := r.PathValue("folder")
	if !s.isModelFolder(folder) {
		s.writeError(w, http.StatusNotFound, "unknown model folder", folder)
		return
	}
	dirs, err := s.opts.Models.Dirs(folder)
	if err != nil {
		s.writeError(w, http.StatusNotFound, "unknown model folder", err.Error())
		return
	}
	names, err := s.opts.Models.List(folder)
	if err != nil {
		s.writeError(w, http.StatusInternalServerError, "cannot list models", err.Error())
		return
	}
	out := []modelFile{}
	for i, dir := range dirs {
		for _, name := range names {
			if hiddenPath(name) || !modelExts[strings.ToLower(path.Ext(name))] {
				continue
			}
			info, err := os.Stat(filepath.Join(dir, filepath.FromSlash(name)))
			if err != nil || !info.Mode().IsRegular() {
				continue
			}
			t := float64(info.ModTime().UnixNano()) / 1e9
			out = append(out, modelFile{Name: name, PathIndex: i, Modified: t, Created: t, Size: info.Size()})
		}
	}
	s.writeJSON(w, http.StatusOK, out)
}

// hiddenPath reports whether a slash-separated name has an element starting with ".".
func hiddenPath(name string) bool {
	for _, e := range strings.Split(name, "/") {
		if strings.HasPrefix(e, ".") {
			return true
		}
	}
	return false
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

// isModelFolder reports whether folder is one of the listed folder names. Legacy aliases
// ("unet", "clip") resolve for loading but are not folders of their own: ComfyUI answers
// 404 for /models/unet, since only folder_names_and_paths keys are served.
func (s *Server) isModelFolder(folder string) bool {
	return s.opts.Models != nil && slices.Contains(s.opts.Models.Folders(), folder)
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
	if !s.isModelFolder(folder) {
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
