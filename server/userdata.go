package server

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// defaultUser is the one user of a single-user server (app/user_manager.py).
const defaultUser = "default"

func (s *Server) userdataRoutes() {
	s.route("GET /users", s.getUsers)
	s.route("GET /userdata", s.listUserdata)
	s.route("GET /v2/userdata", s.listUserdataV2)
	s.route("GET /userdata/{file}", s.getUserdata)
	s.route("POST /userdata/{file}", s.postUserdata)
	s.route("DELETE /userdata/{file}", s.deleteUserdata)
	s.route("POST /userdata/{file}/move/{dest}", s.moveUserdata)
}

// requestUserDir returns the data folder of the request's user (user_manager.py
// get_request_user_id): the default user, or with Options.MultiUser the user the
// comfy-user header names. A user users.json does not list is refused with the status
// refuse and false: ComfyUI answers 401 on the settings routes and 403 on /v2/userdata
// (its other userdata routes fail with 500; 403 here).
func (s *Server) requestUserDir(w http.ResponseWriter, r *http.Request, refuse int) (string, bool) {
	user := defaultUser
	if h, ok := r.Header["Comfy-User"]; ok && s.opts.MultiUser && len(h) > 0 {
		user = h[0]
	}
	known, err := s.knownUser(user)
	if err != nil {
		s.writeError(w, http.StatusInternalServerError, "cannot read users", err.Error())
		return "", false
	}
	if !known {
		s.writeError(w, refuse, "Invalid user specified in request")
		return "", false
	}
	return filepath.Join(s.opts.Dirs.User, user), true
}

// fileInfo is user_manager.py's FileInfo: path relative to the listed folder, size, and
// modification and creation times in seconds since the epoch.
type fileInfo struct {
	Path     string  `json:"path"`
	Size     int64   `json:"size"`
	Modified float64 `json:"modified"`
	Created  float64 `json:"created"`
}

func newFileInfo(rel string, st fs.FileInfo) fileInfo {
	t := float64(st.ModTime().UnixNano()) / 1e9
	// Go's portable FileInfo has no creation time; the modification time stands in.
	return fileInfo{Path: filepath.ToSlash(rel), Size: st.Size(), Modified: t, Created: t}
}

// userPath checks a {file} path value: ComfyUI decodes a value holding "%" once more
// (the front end encodes "workflows/a.json" as one segment).
func userPath(v string) (string, error) {
	if v == "" {
		return "", fmt.Errorf("%w: empty", errBadPath)
	}
	if strings.Contains(v, "%") {
		if u, err := url.PathUnescape(v); err == nil {
			v = u
		}
	}
	rel, err := relPath(v)
	if err != nil {
		return "", err
	}
	if rel == "." {
		return "", fmt.Errorf("%w: %q", errBadPath, v)
	}
	return rel, nil
}

// getUsers is GET /users: with Options.MultiUser the users (id → name), else whether the
// default user's folder exists ("migrated").
func (s *Server) getUsers(w http.ResponseWriter, r *http.Request) {
	if s.opts.MultiUser {
		s.usersMu.Lock()
		users, err := s.loadUsers()
		users = maps.Clone(users)
		s.usersMu.Unlock()
		if err != nil {
			s.writeError(w, http.StatusInternalServerError, "cannot read users", err.Error())
			return
		}
		s.writeJSON(w, http.StatusOK, map[string]any{"storage": "server", "users": users})
		return
	}
	_, err := os.Stat(filepath.Join(s.opts.Dirs.User, defaultUser))
	s.writeJSON(w, http.StatusOK, map[string]any{"storage": "server", "migrated": err == nil})
}

// listUserdata is GET /userdata?dir=&recurse=&full_info=&split=: the files (not
// folders) under dir, as paths relative to dir, as [path, ...components] lists with
// split, or as FileInfo objects with full_info.
func (s *Server) listUserdata(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	dir := q.Get("dir")
	if dir == "" {
		s.writeError(w, http.StatusBadRequest, "Directory not provided")
		return
	}
	rel, err := relPath(dir)
	if err != nil {
		s.writeError(w, http.StatusForbidden, "Invalid directory", err.Error())
		return
	}
	recurse := strings.EqualFold(q.Get("recurse"), "true")
	fullInfo := strings.EqualFold(q.Get("full_info"), "true")
	split := strings.EqualFold(q.Get("split"), "true")
	userDir, ok := s.requestUserDir(w, r, http.StatusForbidden)
	if !ok {
		return
	}
	root, err := openRoot(userDir)
	if err != nil {
		s.writeError(w, http.StatusInternalServerError, "cannot open user folder", err.Error())
		return
	}
	defer root.Close()
	if st, err := root.Stat(rel); err != nil || !st.IsDir() {
		s.writeError(w, http.StatusNotFound, "Directory not found", dir)
		return
	}
	sub, err := root.OpenRoot(rel)
	if err != nil {
		s.writeError(w, http.StatusForbidden, "Invalid directory", err.Error())
		return
	}
	defer sub.Close()
	var files []string
	walkErr := fs.WalkDir(sub.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // an unreadable folder is skipped, as glob does
		}
		if d.IsDir() {
			if p != "." && !recurse {
				return fs.SkipDir
			}
			return nil
		}
		if d.Type().IsRegular() || d.Type()&fs.ModeSymlink != 0 {
			files = append(files, p)
		}
		return nil
	})
	if walkErr != nil {
		s.writeError(w, http.StatusInternalServerError, "cannot list directory", walkErr.Error())
		return
	}
	sort.Strings(files)
	out := []any{}
	for _, p := range files {
		st, err := sub.Stat(p) // follows symlinks inside the root only
		if err != nil || !st.Mode().IsRegular() {
			continue
		}
		switch {
		case fullInfo:
			out = append(out, newFileInfo(p, st))
		case split:
			out = append(out, append([]string{p}, strings.Split(p, "/")...))
		default:
			out = append(out, p)
		}
	}
	s.writeJSON(w, http.StatusOK, out)
}

func (s *Server) getUserdata(w http.ResponseWriter, r *http.Request) {
	rel, err := userPath(r.PathValue("file"))
	if err != nil {
		s.writeError(w, http.StatusForbidden, "invalid file path", err.Error())
		return
	}
	userDir, ok := s.requestUserDir(w, r, http.StatusForbidden)
	if !ok {
		return
	}
	f, st, done, err := openFileIn(userDir, rel)
	if err != nil {
		if isNotExist(err) {
			s.writeError(w, http.StatusNotFound, "file not found", filepath.ToSlash(rel))
			return
		}
		s.writeError(w, http.StatusForbidden, "cannot read file", err.Error())
		return
	}
	defer done()
	// A user file is data (workflows, settings, templates) fetched by the editor,
	// never a page: served as an attachment with a safe type, never sniffed.
	setStoredFileHeaders(w.Header(), userContentType(st.Name()), "attachment", st.Name())
	http.ServeContent(w, r, "", st.ModTime(), f)
}

// overwriteAndInfo reads the overwrite (default true) and full_info (default false)
// query parameters of POST /userdata and move.
func overwriteAndInfo(r *http.Request) (bool, bool) {
	q := r.URL.Query()
	return q.Get("overwrite") != "false", strings.EqualFold(q.Get("full_info"), "true")
}

func (s *Server) answerUserFile(w http.ResponseWriter, root *os.Root, rel string, fullInfo bool) {
	if !fullInfo {
		s.writeJSON(w, http.StatusOK, filepath.ToSlash(rel))
		return
	}
	st, err := root.Stat(rel)
	if err != nil {
		s.writeError(w, http.StatusInternalServerError, "cannot stat file", err.Error())
		return
	}
	s.writeJSON(w, http.StatusOK, newFileInfo(rel, st))
}

// postUserdata stores the body as a user file. The body is streamed to a hidden file
// beside the target and renamed over it, so it is never held in memory and a reader
// never sees half a file.
func (s *Server) postUserdata(w http.ResponseWriter, r *http.Request) {
	rel, err := userPath(r.PathValue("file"))
	if err != nil {
		s.writeError(w, http.StatusForbidden, "invalid file path", err.Error())
		return
	}
	overwrite, fullInfo := overwriteAndInfo(r)
	release, ok := s.acquireUpload(w, r)
	if !ok {
		return
	}
	defer release()
	userDir, ok := s.requestUserDir(w, r, http.StatusForbidden)
	if !ok {
		return
	}
	root, err := openRoot(userDir)
	if err != nil {
		s.writeError(w, http.StatusInternalServerError, "cannot open user folder", err.Error())
		return
	}
	defer root.Close()
	if _, err := root.Lstat(rel); err == nil && !overwrite {
		s.writeError(w, http.StatusConflict, "File already exists")
		return
	}
	body := &readTracker{r: http.MaxBytesReader(w, r.Body, s.opts.MaxUploadSize)}
	if err := writeIn(root, rel, body); err != nil {
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			s.writeError(w, http.StatusRequestEntityTooLarge, "request body too large", fmt.Sprintf("limit is %d bytes", mbe.Limit))
		case body.err != nil:
			s.writeError(w, http.StatusBadRequest, "cannot read request body", body.err.Error())
		default:
			s.writeError(w, http.StatusBadRequest, "Invalid filename. Please avoid special characters like :\\/*?\"<>|", err.Error())
		}
		return
	}
	s.answerUserFile(w, root, rel, fullInfo)
}

// readTracker remembers the error of the reader it wraps, to tell a failed body from
// a failed write.
type readTracker struct {
	r   io.Reader
	err error
}

func (t *readTracker) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err != nil && err != io.EOF {
		t.err = err
	}
	return n, err
}

// writeIn writes content to rel inside root (writeAtomic), creating its parent folders.
func writeIn(root *os.Root, rel string, content io.Reader) error {
	if dir := filepath.Dir(rel); dir != "." {
		if err := root.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	return writeAtomic(root, rel, content)
}

func (s *Server) deleteUserdata(w http.ResponseWriter, r *http.Request) {
	rel, err := userPath(r.PathValue("file"))
	if err != nil {
		s.writeError(w, http.StatusForbidden, "invalid file path", err.Error())
		return
	}
	userDir, ok := s.requestUserDir(w, r, http.StatusForbidden)
	if !ok {
		return
	}
	root, err := openRoot(userDir)
	if err != nil {
		s.writeError(w, http.StatusInternalServerError, "cannot open user folder", err.Error())
		return
	}
	defer root.Close()
	st, err := root.Lstat(rel)
	if err != nil || st.IsDir() {
		s.writeError(w, http.StatusNotFound, "file not found", filepath.ToSlash(rel))
		return
	}
	if err := root.Remove(rel); err != nil {
		s.writeError(w, http.StatusInternalServerError, "cannot delete file", err.Error())
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) moveUserdata(w http.ResponseWriter, r *http.Request) {
	src, err := userPath(r.PathValue("file"))
	if err != nil {
		s.writeError(w, http.StatusForbidden, "invalid file path", err.Error())
		return
	}
	dst, err := userPath(r.PathValue("dest"))
	if err != nil {
		s.writeError(w, http.StatusForbidden, "invalid destination path", err.Error())
		return
	}
	overwrite, fullInfo := overwriteAndInfo(r)
	userDir, ok := s.requestUserDir(w, r, http.StatusForbidden)
	if !ok {
		return
	}
	root, err := openRoot(userDir)
	if err != nil {
		s.writeError(w, http.StatusInternalServerError, "cannot open user folder", err.Error())
		return
	}
	defer root.Close()
	if st, err := root.Lstat(src); err != nil || st.IsDir() {
		s.writeError(w, http.StatusNotFound, "file not found", filepath.ToSlash(src))
		return
	}
	if _, err := root.Lstat(dst); err == nil && !overwrite {
		s.writeError(w, http.StatusConflict, "File already exists")
		return
	}
	if dir := filepath.Dir(dst); dir != "." {
		if err := root.MkdirAll(dir, 0o755); err != nil {
			s.writeError(w, http.StatusBadRequest, "cannot create destination folder", err.Error())
			return
		}
	}
	if err := root.Rename(src, dst); err != nil {
		status := http.StatusInternalServerError
		if errors.Is(err, fs.ErrExist) {
			status = http.StatusConflict
		}
		s.writeError(w, status, "cannot move file", err.Error())
		return
	}
	s.log.Info("moved user file", "from", src, "to", dst)
	s.answerUserFile(w, root, dst, fullInfo)
}

// userEntry is one item of GET /v2/userdata.
type userEntry struct {
	Name     string   `json:"name"`
	Path     string   `json:"path"`
	Type     string   `json:"type"`
	Size     *int64   `json:"size,omitempty"`
	Modified *float64 `json:"modified,omitempty"`
}

// listUserdataV2 is GET /v2/userdata?path=: every folder and file under path (the whole
// tree), with paths relative to the user's root, folders first, then by lower-case
// name (user_manager.py list_userdata_v2).
func (s *Server) listUserdataV2(w http.ResponseWriter, r *http.Request) {
	rel, err := relPath(r.URL.Query().Get("path"))
	if err != nil {
		s.writeError(w, http.StatusBadRequest, "Invalid path requested", err.Error())
		return
	}
	userDir, ok := s.requestUserDir(w, r, http.StatusForbidden)
	if !ok {
		return
	}
	root, err := openRoot(userDir)
	if err != nil {
		s.writeError(w, http.StatusInternalServerError, "cannot open user folder", err.Error())
		return
	}
	defer root.Close()
	st, err := root.Stat(rel)
	if err != nil {
		s.writeError(w, http.StatusNotFound, "Requested path not found")
		return
	}
	if !st.IsDir() {
		s.writeError(w, http.StatusBadRequest, "Requested path is not a directory")
		return
	}
	out := []userEntry{}
	err = fs.WalkDir(root.FS(), filepath.ToSlash(rel), func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == filepath.ToSlash(rel) {
			return nil
		}
		e := userEntry{Name: d.Name(), Path: p, Type: "file"}
		if d.IsDir() {
			e.Type = "directory"
		} else if info, err := d.Info(); err == nil {
			size, mod := info.Size(), float64(info.ModTime().UnixNano())/1e9
			e.Size, e.Modified = &size, &mod
		}
		out = append(out, e)
		return nil
	})
	if err != nil {
		s.writeError(w, http.StatusInternalServerError, "Error reading directory contents", err.Error())
		return
	}
	sort.SliceStable(out, func(i, j int) bool {
		di, dj := out[i].Type == "directory", out[j].Type == "directory"
		if di != dj {
			return di
		}
		return strings.ToLower(out[i].Name) < strings.ToLower(out[j].Name)
	})
	s.writeJSON(w, http.StatusOK, out)
}
