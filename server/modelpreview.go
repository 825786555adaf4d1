package server

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/forgeflow/forgeflow/weights/safetensors"
)

// Model previews (ComfyUI's app/model_manager.py get_model_preview): the model
// library shows, for a model file, an image stored beside it (MODEL.png or
// MODEL.preview.png, any image extension) or else the first cover image embedded in
// the .safetensors metadata (ssmd_cover_images, a JSON list of base64 images).

const (
	// maxPreviewHeader bounds the safetensors header read for cover images, as
	// ComfyUI's safetensors_header(max_size=8 MiB) here.
	maxPreviewHeader = 8 << 20
	// maxPreviewFile bounds a preview image file served.
	maxPreviewFile = 32 << 20
)

// previewExts are the image extensions a preview file may have.
var previewExts = []string{".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"}

// previewTypes are the sniffed content types served; anything else is not a preview.
var previewTypes = []string{"image/png", "image/jpeg", "image/webp", "image/gif", "image/bmp"}

func (s *Server) modelPreviewRoutes() {
	s.route("GET /experiment/models/preview/{folder}/{path_index}/{filename...}", s.getModelPreview)
}

// getModelPreview is GET /experiment/models/preview/{folder}/{path_index}/{filename}:
// the preview image of the model filename in the path_index-th directory of folder.
// ComfyUI re-encodes it as WebP; Go has no WebP encoder, so the image is served as it
// is stored, with its sniffed type. Everything is read through os.Root: no name and no
// symbolic link leads outside that directory.
func (s *Server) getModelPreview(w http.ResponseWriter, r *http.Request) {
	folder, name := r.PathValue("folder"), r.PathValue("filename")
	if !s.isModelFolder(folder) {
		s.writeError(w, http.StatusNotFound, "unknown model folder", folder)
		return
	}
	if name == "" {
		s.writeError(w, http.StatusBadRequest, "no model file named")
		return
	}
	idx, err := strconv.Atoi(r.PathValue("path_index"))
	if err != nil {
		s.writeError(w, http.StatusBadRequest, "path_index must be an integer")
		return
	}
	rel, err := relPath(name)
	if err != nil || rel == "." {
		s.writeError(w, http.StatusForbidden, "invalid model file name", name)
		return
	}
	dirs, err := s.opts.Models.Dirs(folder)
	if err != nil || idx < 0 || idx >= len(dirs) {
		s.writeError(w, http.StatusNotFound, "no such model directory", r.PathValue("path_index"))
		return
	}
	root, err := os.OpenRoot(dirs[idx])
	if err != nil {
		s.writeError(w, http.StatusNotFound, "model directory not found")
		return
	}
	defer root.Close()
	img := previewImage(root, rel)
	if img == nil {
		s.writeError(w, http.StatusNotFound, "no preview for this model")
		return
	}
	h := w.Header()
	h.Set("Content-Type", http.DetectContentType(img))
	h.Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(img)
}

// previewImage returns the preview of model rel in root: the first image file (by
// name) that is rel's stem plus an image extension, or its stem plus ".preview" and
// one; else the first cover image of STEM.safetensors; nil when there is none.
func previewImage(root *os.Root, rel string) []byte {
	dir, base := path.Split(rel)
	stem := strings.TrimSuffix(base, path.Ext(base))
	if dir == "" {
		dir = "."
	}
	entries, err := fs.ReadDir(root.FS(), path.Clean(dir))
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range entries {
		n := e.Name()
		ext := strings.ToLower(path.Ext(n))
		if s := strings.TrimSuffix(n, path.Ext(n)); (s == stem || s == stem+".preview") && slices.Contains(previewExts, ext) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	for _, n := range names {
		if img := readPreviewFile(root, path.Join(dir, n)); img != nil {
			return img
		}
	}
	return coverImage(root, path.Join(dir, stem+".safetensors"))
}

// readPreviewFile reads an image file of at most maxPreviewFile bytes, or nil.
func readPreviewFile(root *os.Root, p string) []byte {
	f, err := root.Open(p)
	if err != nil {
		return nil
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() || st.Size() > maxPreviewFile {
		return nil
	}
	b, err := io.ReadAll(io.LimitReader(f, maxPreviewFile))
	if err != nil || !isPreviewImage(b) {
		return nil
	}
	return b
}

func isPreviewImage(b []byte) bool {
	return slices.Contains(previewTypes, http.DetectContentType(b))
}

// coverImage returns the first image of the ssmd_cover_images metadata of a
// safetensors file, or nil.
func coverImage(root *os.Root, p string) []byte {
	f, err := root.Open(p)
	if err != nil {
		return nil
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return nil
	}
	var n [8]byte
	if _, err := f.ReadAt(n[:], 0); err != nil || binary.LittleEndian.Uint64(n[:]) > maxPreviewHeader {
		return nil
	}
	h, err := safetensors.DecodeHeader(p, f, st.Size())
	if err != nil {
		return nil
	}
	var covers []string
	if json.Unmarshal([]byte(h.Metadata["ssmd_cover_images"]), &covers) != nil {
		return nil
	}
	for _, c := range covers {
		if img, err := base64.StdEncoding.DecodeString(c); err == nil && isPreviewImage(img) {
			return img
		}
	}
	return nil
}
