package server

import (
	"bytes"
	"encoding/json"
	"net/http"
)

// settingsFile is a user's settings file in its folder (app/app_settings.py).
const settingsFile = "comfy.settings.json"

func (s *Server) settingsRoutes() {
	s.route("GET /settings", s.getSettings)
	s.route("GET /settings/{id}", s.getSetting)
	s.route("POST /settings", s.postSettings)
	s.route("POST /settings/{id}", s.postSetting)
}

// loadSettings reads the settings object; a missing or corrupt file is {} (as ComfyUI,
// which logs the corruption and starts over).
func (s *Server) loadSettings(userDir string) map[string]any {
	out := map[string]any{}
	data, err := readFileIn(userDir, settingsFile)
	if err != nil {
		return out
	}
	if err := decodeNumbers(data, &out); err != nil || out == nil {
		s.log.Error("user settings file is corrupted", "err", err)
		return map[string]any{}
	}
	return out
}

func (s *Server) saveSettings(userDir string, v map[string]any) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "    ")
	if err := enc.Encode(v); err != nil {
		return err
	}
	root, err := openRoot(userDir)
	if err != nil {
		return err
	}
	defer root.Close()
	return root.WriteFile(settingsFile, bytes.TrimRight(buf.Bytes(), "\n"), 0o644)
}

func (s *Server) getSettings(w http.ResponseWriter, r *http.Request) {
	userDir, ok := s.requestUserDir(w, r, http.StatusUnauthorized)
	if !ok {
		return
	}
	s.settingsMu.Lock()
	defer s.settingsMu.Unlock()
	s.writeJSON(w, http.StatusOK, s.loadSettings(userDir))
}

// getSetting answers one value, or null when unset.
func (s *Server) getSetting(w http.ResponseWriter, r *http.Request) {
	userDir, ok := s.requestUserDir(w, r, http.StatusUnauthorized)
	if !ok {
		return
	}
	s.settingsMu.Lock()
	defer s.settingsMu.Unlock()
	s.writeJSON(w, http.StatusOK, s.loadSettings(userDir)[r.PathValue("id")])
}

// postSettings merges an object into the settings.
func (s *Server) postSettings(w http.ResponseWriter, r *http.Request) {
	// The user first, as ComfyUI: an unknown user's bad body is still 401.
	userDir, ok := s.requestUserDir(w, r, http.StatusUnauthorized)
	if !ok {
		return
	}
	var body map[string]any
	if !s.readJSON(w, r, s.opts.MaxPromptSize, &body) {
		return
	}
	if body == nil {
		s.writeError(w, http.StatusBadRequest, "settings must be a JSON object")
		return
	}
	s.settingsMu.Lock()
	defer s.settingsMu.Unlock()
	cur := s.loadSettings(userDir)
	for k, v := range body {
		cur[k] = v
	}
	if err := s.saveSettings(userDir, cur); err != nil {
		s.writeError(w, http.StatusInternalServerError, "cannot save settings", err.Error())
		return
	}
	w.WriteHeader(http.StatusOK)
}

// postSetting sets one value to the JSON body.
func (s *Server) postSetting(w http.ResponseWriter, r *http.Request) {
	userDir, ok := s.requestUserDir(w, r, http.StatusUnauthorized)
	if !ok {
		return
	}
	var v any
	if !s.readJSON(w, r, s.opts.MaxPromptSize, &v) {
		return
	}
	s.settingsMu.Lock()
	defer s.settingsMu.Unlock()
	cur := s.loadSettings(userDir)
	cur[r.PathValue("id")] = v
	if err := s.saveSettings(userDir, cur); err != nil {
		s.writeError(w, http.StatusInternalServerError, "cannot save settings", err.Error())
		return
	}
	w.WriteHeader(http.StatusOK)
}
