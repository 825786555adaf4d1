package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/forgeflow/forgeflow/executor"
)

// systemUserPrefix starts the names of ComfyUI's system users (folder_paths.py
// SYSTEM_USER_PREFIX); no user may take one.
const systemUserPrefix = "__"

// userIDUnsafe are the runs of characters a user id replaces by "-" (user_manager.py
// add_user).
var userIDUnsafe = regexp.MustCompile(`[^a-zA-Z0-9\-_]+`)

func (s *Server) userRoutes() {
	s.route("POST /users", s.postUsers)
}

// usersFile is USER/users.json: user id → user name, as ComfyUI keeps it.
func (s *Server) usersFile() string { return filepath.Join(s.opts.Dirs.User, "users.json") }

// loadUsers returns the known users (id → name), reading users.json the first time:
// without the file, the default user alone, or with Options.MultiUser nobody (as
// ComfyUI). s.usersMu must be held; the map is the server's own.
func (s *Server) loadUsers() (map[string]string, error) {
	if s.users != nil {
		return s.users, nil
	}
	users := map[string]string{}
	b, err := os.ReadFile(s.usersFile())
	switch {
	case errors.Is(err, os.ErrNotExist):
		if !s.opts.MultiUser {
			users[defaultUser] = defaultUser
		}
	case err != nil:
		return nil, err
	default:
		if err := json.Unmarshal(b, &users); err != nil {
			return nil, fmt.Errorf("server: %s: %w", s.usersFile(), err)
		}
	}
	s.users = users
	return users, nil
}

// knownUser reports whether id is a user whose data may be served: one users.json lists
// (the default user alone without --multi-user), whose id is one plain folder name
// (users.json is a file a person may edit) and not a system user's.
func (s *Server) knownUser(id string) (bool, error) {
	if !s.opts.MultiUser {
		return id == defaultUser, nil
	}
	if id == "" || id == "." || id == ".." || strings.ContainsAny(id, "/\\\x00") ||
		strings.HasPrefix(id, systemUserPrefix) || filepath.IsAbs(id) {
		return false, nil
	}
	s.usersMu.Lock()
	defer s.usersMu.Unlock()
	users, err := s.loadUsers()
	if err != nil {
		return false, err
	}
	_, ok := users[id]
	return ok, nil
}

// postUsers is POST /users {"username": name}: it records a new user in users.json
// and answers its id, the name made safe for a folder plus "_" and a random UUID. A
// name already taken, empty, or starting with the system prefix is refused with 400
// {"error": ...}. Without --multi-user, as in ComfyUI, the new user is recorded and
// requests still act as the default user; with it, the comfy-user header may name it.
func (s *Server) postUsers(w http.ResponseWriter, r *http.Request) {
	var body map[string]any
	if !s.readJSON(w, r, s.opts.MaxPromptSize, &body) {
		return
	}
	name, ok := body["username"].(string)
	if !ok {
		s.writeError(w, http.StatusBadRequest, "username not provided")
		return
	}
	s.usersMu.Lock()
	defer s.usersMu.Unlock()
	users, err := s.loadUsers()
	if err != nil {
		s.writeError(w, http.StatusInternalServerError, "cannot read users", err.Error())
		return
	}
	taken := false
	for _, n := range users {
		taken = taken || n == name
	}
	if taken {
		s.writeError(w, http.StatusBadRequest, "Duplicate username.")
		return
	}
	name = strings.TrimSpace(name)
	id := userIDUnsafe.ReplaceAllString(name, "-")
	switch {
	case name == "":
		s.writeError(w, http.StatusBadRequest, "username not provided")
		return
	case strings.HasPrefix(name, systemUserPrefix), strings.HasPrefix(id, systemUserPrefix):
		s.writeError(w, http.StatusBadRequest, "System User prefix not allowed")
		return
	}
	id += "_" + executor.NewPromptID()
	next := maps.Clone(users)
	next[id] = name
	if err := writeJSONFile(s.usersFile(), next); err != nil {
		s.writeError(w, http.StatusInternalServerError, "cannot save users", err.Error())
		return
	}
	s.users = next
	s.log.Info("user added", "user", id)
	s.writeJSON(w, http.StatusOK, id)
}

// writeJSONFile writes v as JSON to path through a temporary file and a rename, so
// that a crash leaves the old file or the new one, never half of one.
func writeJSONFile(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}
