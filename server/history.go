package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/forgeflow/forgeflow/executor"
)

func (s *Server) historyRoutes() {
	s.route("GET /history", s.getHistory)
	s.route("GET /history/{prompt_id}", s.getHistoryItem)
	s.route("POST /history", s.postHistory)
}

// writeHistory writes entries as one JSON object keyed by prompt id, in the entries'
// order (ComfyUI's history dict keeps insertion order; a Go map would sort the keys).
func (s *Server) writeHistory(w http.ResponseWriter, entries []*executor.HistoryEntry) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, e := range entries {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(e.Prompt.ID)
		b.Write(k)
		b.WriteByte(':')
		v, err := json.Marshal(e)
		if err != nil {
			s.writeError(w, http.StatusInternalServerError, "cannot encode history entry", err.Error())
			return
		}
		b.Write(v)
	}
	b.WriteByte('}')
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_, _ = w.Write(b.Bytes())
}

// queryInt reads an optional integer query parameter.
func queryInt(r *http.Request, name string, def int) (int, bool) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, true
	}
	n, err := strconv.Atoi(v)
	return n, err == nil
}

func (s *Server) getHistory(w http.ResponseWriter, r *http.Request) {
	maxItems, ok := queryInt(r, "max_items", -1)
	if !ok {
		s.writeError(w, http.StatusBadRequest, "max_items must be an integer")
		return
	}
	offset, ok := queryInt(r, "offset", -1)
	if !ok {
		s.writeError(w, http.StatusBadRequest, "offset must be an integer")
		return
	}
	if s.queue == nil {
		s.writeHistory(w, nil)
		return
	}
	entries, err := s.queue.ListHistory(r.Context(), maxItems, offset)
	if err != nil {
		s.writeError(w, http.StatusInternalServerError, "cannot read history", err.Error())
		return
	}
	s.writeHistory(w, entries)
}

func (s *Server) getHistoryItem(w http.ResponseWriter, r *http.Request) {
	if s.queue == nil {
		s.writeHistory(w, nil)
		return
	}
	e, err := s.queue.GetHistory(r.Context(), r.PathValue("prompt_id"))
	if errors.Is(err, executor.ErrNotFound) {
		// ComfyUI answers an unknown id with an empty object, not 404.
		s.writeHistory(w, nil)
		return
	}
	if err != nil {
		s.writeError(w, http.StatusInternalServerError, "cannot read history", err.Error())
		return
	}
	s.writeHistory(w, []*executor.HistoryEntry{e})
}

func (s *Server) postHistory(w http.ResponseWriter, r *http.Request) {
	var body clearDelete
	if !s.readJSON(w, r, s.opts.MaxPromptSize, &body) {
		return
	}
	if _, status, e := s.clearOrDelete(r.Context(), body, "history", executor.Queue.ClearHistory, executor.Queue.DeleteHistory); e != nil {
		s.writeJSON(w, status, e)
		return
	}
	w.WriteHeader(http.StatusOK)
}
