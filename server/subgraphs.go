package server

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"strings"
)

// Global subgraphs (ComfyUI's app/subgraph_manager.py): subgraph blueprints the
// server offers every user, which the front end lists in its node library. ComfyUI
// gathers them from custom node packs (PACK/subgraphs/*.json) and from its own
// blueprints/ folder; forgeflow has no custom node packs, so they are the *.json files
// of Dirs.Blueprints (none when it is unset).

// blueprintSource and blueprintPack are what ComfyUI reports for the blueprints it
// ships itself.
const (
	blueprintSource = "templates"
	blueprintPack   = "comfyui"
)

// subgraphEntry is one global subgraph. Data (the file's text) is only in GET
// /global_subgraphs/{id}.
type subgraphEntry struct {
	Source             string            `json:"source"`
	Name               string            `json:"name"`
	Info               map[string]string `json:"info"`
	EssentialsCategory string            `json:"essentials_category,omitempty"`
	Data               *string           `json:"data,omitempty"`
}

func (s *Server) subgraphRoutes() {
	s.route("GET /global_subgraphs", s.getGlobalSubgraphs)
	s.route("GET /global_subgraphs/{id}", s.getGlobalSubgraph)
}

// blueprints returns the blueprint files by id: the hex SHA-256 of the source and the
// file name, stable across restarts. Files over MaxPromptSize or that do not parse as
// JSON are left out.
func (s *Server) blueprints(withData bool) map[string]*subgraphEntry {
	out := map[string]*subgraphEntry{}
	if s.opts.Dirs.Blueprints == "" {
		return out
	}
	root, err := os.OpenRoot(s.opts.Dirs.Blueprints)
	if err != nil {
		return out
	}
	defer root.Close()
	entries, err := fs.ReadDir(root.FS(), ".")
	if err != nil {
		return out
	}
	for _, e := range entries {
		name := e.Name()
		if !strings.EqualFold(path.Ext(name), ".json") || strings.HasPrefix(name, ".") {
			continue
		}
		data, ok := readBlueprint(root, name, s.opts.MaxPromptSize)
		if !ok {
			continue
		}
		var bp struct {
			Definitions struct {
				Subgraphs []struct {
					EssentialsCategory string `json:"essentials_category"`
				} `json:"subgraphs"`
			} `json:"definitions"`
		}
		if json.Unmarshal(data, &bp) != nil {
			continue
		}
		entry := &subgraphEntry{Source: blueprintSource, Name: strings.TrimSuffix(name, path.Ext(name)), Info: map[string]string{"node_pack": blueprintPack}}
		if sg := bp.Definitions.Subgraphs; len(sg) > 0 {
			entry.EssentialsCategory = sg[0].EssentialsCategory
		}
		if withData {
			text := string(data)
			entry.Data = &text
		}
		sum := sha256.Sum256([]byte(blueprintSource + "blueprints/" + name))
		out[hex.EncodeToString(sum[:])] = entry
	}
	return out
}

// readBlueprint reads a regular file of at most limit bytes.
func readBlueprint(root *os.Root, name string, limit int64) ([]byte, bool) {
	f, err := root.Open(name)
	if err != nil {
		return nil, false
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() || st.Size() > limit {
		return nil, false
	}
	b, err := io.ReadAll(io.LimitReader(f, limit))
	return b, err == nil
}

// getGlobalSubgraphs is GET /global_subgraphs: {id: {source, name, info}} without the
// files' contents.
func (s *Server) getGlobalSubgraphs(w http.ResponseWriter, r *http.Request) {
	s.writeJSON(w, http.StatusOK, s.blueprints(false))
}

// getGlobalSubgraph is GET /global_subgraphs/{id}: the entry with "data", the file's
// text; null for an unknown id, as ComfyUI answers.
func (s *Server) getGlobalSubgraph(w http.ResponseWriter, r *http.Request) {
	s.writeJSON(w, http.StatusOK, s.blueprints(true)[r.PathValue("id")])
}
