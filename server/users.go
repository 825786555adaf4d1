package server

import (
	"encoding/json"
	"errors"
	"fmt"
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

// readUsers returns users.json, or the single default user when there is none.
func (s *Server) readUsers() (map[string]string, error) {
	b, err := os.ReadFile(s.usersFile())
	if errors.Is(err, os.ErrNotExist) {
		return map[string]string{defaultUser: defaultUser}, nil
	}
	if err != nil {
		return nil, err
	}
	users := map[string]string{}
	if err := json.Unmarshal(b, &users); err != nil {
		return nil, fmt.Errorf("server: %s: %w", s.usersFile(), err)
	}
	return users, nil
}

// postUsers is POST /users {"username": name}: it records a new user in users.json
// and answers its id, the name made safe for a folder plus "_" and a random UUID. A
// name already taken, empty, or starting with the system prefix is refused with 400
// {"error": ...}. The server is single-user (ComfyUI without --multi-user): as there,
// the new user is recorded, and requests still act as the default user.
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
	users, err := s.readUsers()
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
	users[id] = name
	if err := writeJSONFile(s.usersFile(), users); err != nil {
		s.writeError(w, http.StatusInternalServerError, "cannot save users", err.Error())
		return
	}
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
