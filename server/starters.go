package server

import (
	"net/http"

	"github.com/forgeflow/forgeflow/weights/pull"
)

// Starter models through the server: the editor's one-click way to a first image.
// GET /forgeflow/models/downloads lists pull.Starters with which of their files are
// present; POST /forgeflow/models/download {"starter": NAME} queues the missing files
// and the missing tokenizers they need.

// starter is one entry of the list.
type starter struct {
	Name        string        `json:"name"`
	Description string        `json:"description"`
	Size        int64         `json:"size"`
	Files       []starterFile `json:"files"`
	Present     bool          `json:"present"` // every file is there
}

type starterFile struct {
	Name    string `json:"name"`
	Folder  string `json:"folder"`
	URL     string `json:"url"`
	Size    int64  `json:"size"`
	Present bool   `json:"present"`
}

// starters lists the starters this server can fetch: those whose sources parse and
// pass the host policy and whose folders exist, without pickle files.
func (s *Server) starters() []starter {
	out := []starter{}
	if s.opts.Models == nil {
		return out
	}
	for _, st := range pull.Starters {
		e := starter{Name: st.Name, Description: st.Description, Size: st.Size(), Present: true}
		ok := true
		for _, f := range st.Files {
			src, err := pull.ParseSource(f.Source, s.dl.opts.HFEndpoint)
			if err != nil || s.dl.policy.Check(src.URL) != nil || pull.IsPickle(src.Name) || !s.isModelFolder(f.Folder) {
				ok = false
				break
			}
			_, err = s.opts.Models.Resolve(f.Folder, src.Name)
			sf := starterFile{Name: src.Name, Folder: f.Folder, URL: src.URL, Size: f.Size, Present: err == nil}
			e.Present = e.Present && sf.Present
			e.Files = append(e.Files, sf)
		}
		if ok {
			out = append(out, e)
		}
	}
	return out
}

func (s *Server) postStarter(w http.ResponseWriter, name string) {
	var st *starter
	for _, x := range s.starters() {
		if x.Name == name {
			st = &x
			break
		}
	}
	if st == nil {
		s.writeError(w, http.StatusNotFound, "no such starter model", name)
		return
	}
	started := []*download{}
	for _, f := range st.Files {
		if f.Present {
			continue
		}
		dl, ref := s.queueDownload(pull.Source{URL: f.URL, Name: f.Name}, f.Folder)
		if ref != nil {
			s.writeError(w, ref.status, ref.msg, ref.details)
			return
		}
		started = append(started, dl)
	}
	spec, _ := pull.FindStarter(name)
	for _, tok := range spec.Tokenizers {
		place := s.dl.opts.Tokenizers[tok]
		if place == nil {
			continue
		}
		dir, present := place()
		if present {
			continue
		}
		for _, source := range pull.Tokenizers[tok] {
			src, err := pull.ParseSource(source, s.dl.opts.HFEndpoint)
			if err != nil {
				s.writeError(w, http.StatusInternalServerError, "bad tokenizer source", err.Error())
				return
			}
			if err := s.dl.policy.Check(src.URL); err != nil {
				s.writeError(w, http.StatusForbidden, "download host not allowed", err.Error())
				return
			}
			dl, ref := s.startDownload(src, "tokenizers/"+tok, dir)
			if ref != nil {
				s.writeError(w, ref.status, ref.msg, ref.details)
				return
			}
			started = append(started, dl)
		}
	}
	s.writeJSON(w, http.StatusAccepted, map[string]any{"starter": name, "downloads": started})
}
