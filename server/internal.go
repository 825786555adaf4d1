package server

import (
	"net/http"
	"os"
	"sort"
	"strings"
	"time"
)

// ComfyUI's /internal routes (api_server/routes/internal/internal_routes.py): for its
// own front end, served at /internal only (ComfyUI mounts them as a sub-application,
// outside the /api copy of its route table).

// logTerminal is the terminal size /internal/logs/raw reports. The server writes no
// terminal of its own; ComfyUI reports 80×24 when it has none either.
var logTerminal = map[string]int{"cols": 80, "rows": 24}

// logsBacklog bounds the log lines waiting to be sent to subscribed clients.
const logsBacklog = 256

func (s *Server) internalRoutes() {
	s.mux.HandleFunc("GET /internal/logs", s.getLogs)
	s.mux.HandleFunc("GET /internal/logs/raw", s.getRawLogs)
	s.mux.HandleFunc("PATCH /internal/logs/subscribe", s.patchLogSubscription)
	s.mux.HandleFunc("GET /internal/folder_paths", s.getFolderPaths)
	s.mux.HandleFunc("GET /internal/files/{directory_type}", s.getInternalFiles)
}

// getLogs is GET /internal/logs: the kept log lines as one JSON string, each as
// "time - line".
func (s *Server) getLogs(w http.ResponseWriter, r *http.Request) {
	var b strings.Builder
	for _, e := range s.opts.Logs.Entries() {
		b.WriteString(e.T)
		b.WriteString(" - ")
		b.WriteString(e.M)
	}
	s.writeJSON(w, http.StatusOK, b.String())
}

// getRawLogs is GET /internal/logs/raw: {"entries": [{t, m}], "size": {cols, rows}}.
func (s *Server) getRawLogs(w http.ResponseWriter, r *http.Request) {
	s.writeJSON(w, http.StatusOK, map[string]any{"entries": s.opts.Logs.Entries(), "size": logTerminal})
}

// patchLogSubscription is PATCH /internal/logs/subscribe {"clientId", "enabled"}: the
// websocket client clientId gets (or stops getting) each new log line as a "logs"
// message {"entries": [{t, m}], "size": null}.
func (s *Server) patchLogSubscription(w http.ResponseWriter, r *http.Request) {
	var body struct {
		ClientID *string `json:"clientId"`
		Enabled  *bool   `json:"enabled"`
	}
	if !s.readJSON(w, r, s.opts.MaxPromptSize, &body) {
		return
	}
	if body.ClientID == nil || body.Enabled == nil {
		s.writeError(w, http.StatusBadRequest, "clientId and enabled are required")
		return
	}
	s.logSubsMu.Lock()
	if *body.Enabled {
		s.logSubs[*body.ClientID] = true
	} else {
		delete(s.logSubs, *body.ClientID)
	}
	s.logSubsMu.Unlock()
	if *body.Enabled {
		s.logsOnce.Do(func() {
			ch, stop := s.opts.Logs.watch(logsBacklog)
			s.logSubsMu.Lock()
			s.stopLogs = stop
			s.logSubsMu.Unlock()
			go s.forwardLogs(ch)
		})
	}
	w.WriteHeader(http.StatusOK)
}

// forwardLogs sends each new log line to the subscribed clients until the server
// closes; a subscriber that is no longer connected is dropped, as ComfyUI does.
func (s *Server) forwardLogs(ch <-chan LogEntry) {
	for {
		select {
		case <-s.closed:
			return
		case e := <-ch:
			msg, err := jsonMessage("logs", map[string]any{"entries": []LogEntry{e}, "size": nil})
			if err != nil {
				continue
			}
			s.logSubsMu.Lock()
			sids := make([]string, 0, len(s.logSubs))
			for sid := range s.logSubs {
				sids = append(sids, sid)
			}
			s.logSubsMu.Unlock()
			for _, sid := range sids {
				cs := s.hub.targets(sid, false)
				if len(cs) == 0 {
					s.logSubsMu.Lock()
					delete(s.logSubs, sid)
					s.logSubsMu.Unlock()
					continue
				}
				cs[0].enqueue(wsMessage{data: msg})
			}
		}
	}
}

// getFolderPaths is GET /internal/folder_paths: every model folder name with the
// directories searched for it.
func (s *Server) getFolderPaths(w http.ResponseWriter, r *http.Request) {
	out := map[string][]string{}
	if s.opts.Models != nil {
		for _, f := range s.opts.Models.Folders() {
			dirs, err := s.opts.Models.Dirs(f)
			if err != nil {
				continue
			}
			out[f] = append([]string{}, dirs...)
		}
	}
	s.writeJSON(w, http.StatusOK, out)
}

// getInternalFiles is GET /internal/files/{output|input|temp}: the names of the
// folder's regular files (not its subfolders), newest first.
func (s *Server) getInternalFiles(w http.ResponseWriter, r *http.Request) {
	var dir string
	switch r.PathValue("directory_type") {
	case "output":
		dir = s.opts.Dirs.Output
	case "input":
		dir = s.opts.Dirs.Input
	case "temp":
		dir = s.opts.Dirs.Temp
	default:
		s.writeError(w, http.StatusBadRequest, "Invalid directory type")
		return
	}
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		s.writeError(w, http.StatusInternalServerError, "cannot list folder", err.Error())
		return
	}
	type file struct {
		name string
		mod  time.Time
	}
	var files []file
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() {
			continue
		}
		files = append(files, file{e.Name(), info.ModTime()})
	}
	sort.SliceStable(files, func(i, j int) bool { return files[i].mod.After(files[j].mod) })
	names := make([]string, 0, len(files))
	for _, f := range files {
		names = append(names, f.name)
	}
	s.writeJSON(w, http.StatusOK, names)
}
