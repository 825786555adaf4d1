package server

import (
	"net/http"
)

func (s *Server) objectInfoRoutes() {
	s.route("GET /object_info", s.getObjectInfo)
	s.route("GET /object_info/{node_class}", s.getObjectInfoNode)
}

func (s *Server) getObjectInfo(w http.ResponseWriter, r *http.Request) {
	out := map[string]any{}
	if s.opts.Nodes != nil {
		for _, name := range s.opts.Nodes.Names() {
			if sch, ok := s.opts.Nodes.Schema(name); ok {
				out[name] = sch.ObjectInfo()
			}
		}
	}
	s.writeJSON(w, http.StatusOK, out)
}

// getObjectInfoNode answers {} for an unknown class, as ComfyUI does.
func (s *Server) getObjectInfoNode(w http.ResponseWriter, r *http.Request) {
	out := map[string]any{}
	name := r.PathValue("node_class")
	if s.opts.Nodes != nil {
		if sch, ok := s.opts.Nodes.Schema(name); ok {
			out[name] = sch.ObjectInfo()
		}
	}
	s.writeJSON(w, http.StatusOK, out)
}
