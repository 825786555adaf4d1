package server

import (
	"io/fs"
	"net/http"
	"path"
	"runtime"
	"sort"
	"strings"

	"github.com/forgeflow/forgeflow/weights/memory"
)

// Memory reports memory for /system_stats and frees it for /free.
// *memory.Manager (weights/memory) implements it.
type Memory interface {
	Stats() memory.Stats
	// UnloadAll drops every cached model that is not in use (unload_models).
	UnloadAll()
	// FreeMemory releases cached allocations (free_memory).
	FreeMemory()
}

// RequiredFrontendVersion is the ComfyUI front end release that ComfyUI 0.3.64 pins
// (requirements.txt comfyui-frontend-package).
const RequiredFrontendVersion = "1.27.10"

func (s *Server) systemRoutes() {
	s.route("GET /system_stats", s.getSystemStats)
	s.route("GET /features", s.getFeatures)
	s.route("POST /free", s.postFree)
	s.route("GET /extensions", s.getExtensions)
	// ComfyUI's front end asks these at start-up; with no custom nodes ComfyUI answers
	// empty objects (app/custom_node_manager.py).
	s.route("GET /workflow_templates", s.emptyObject)
	s.route("GET /i18n", s.emptyObject)
}

func (s *Server) emptyObject(w http.ResponseWriter, r *http.Request) {
	s.writeJSON(w, http.StatusOK, map[string]any{})
}

type systemInfo struct {
	OS                        string   `json:"os"`
	RAMTotal                  int64    `json:"ram_total"`
	RAMFree                   int64    `json:"ram_free"`
	ComfyUIVersion            string   `json:"comfyui_version"`
	RequiredFrontendVersion   string   `json:"required_frontend_version"`
	InstalledTemplatesVersion *string  `json:"installed_templates_version"`
	RequiredTemplatesVersion  *string  `json:"required_templates_version"`
	PythonVersion             string   `json:"python_version"`
	PytorchVersion            string   `json:"pytorch_version"`
	EmbeddedPython            bool     `json:"embedded_python"`
	Argv                      []string `json:"argv"`
}

type deviceInfo struct {
	Name           string `json:"name"`
	Type           string `json:"type"`
	Index          *int   `json:"index"`
	VRAMTotal      int64  `json:"vram_total"`
	VRAMFree       int64  `json:"vram_free"`
	TorchVRAMTotal int64  `json:"torch_vram_total"`
	TorchVRAMFree  int64  `json:"torch_vram_free"`
}

// getSystemStats answers ComfyUI's {"system": {...}, "devices": [...]} (server.py,
// system_stats): each device's name ("cuda:0 NAME : native"), type ("cuda"), index,
// vram_total/vram_free (the device's memory, idle pool blocks counted as free) and
// torch_vram_total/torch_vram_free (what the allocator holds and holds idle). Without a
// GPU the one device is the CPU with RAM as its memory and a null index, as ComfyUI
// reports --cpu.
func (s *Server) getSystemStats(w http.ResponseWriter, r *http.Request) {
	var st memory.Stats
	if s.opts.Memory != nil {
		st = s.opts.Memory.Stats()
	} else if ram, err := memory.ReadMeminfo("/proc/meminfo"); err == nil {
		st.RAMTotal, st.RAMFree = ram.Total, ram.Available
	}
	osName := "posix"
	if runtime.GOOS == "windows" {
		osName = "nt"
	}
	argv := s.opts.Argv
	if argv == nil {
		argv = []string{}
	}
	sys := systemInfo{
		OS: osName, RAMTotal: st.RAMTotal, RAMFree: st.RAMFree,
		ComfyUIVersion: s.opts.Version, RequiredFrontendVersion: RequiredFrontendVersion,
		PythonVersion: "forgeflow (" + runtime.Version() + ")", PytorchVersion: "none",
		Argv: argv,
	}
	devices := []deviceInfo{}
	for _, d := range st.ComfyUIDevices() {
		var idx *int // null for the cpu, as torch.device("cpu").index
		if d.Index >= 0 {
			idx = &d.Index
		}
		devices = append(devices, deviceInfo{Name: d.Name, Type: d.Type, Index: idx,
			VRAMTotal: d.VRAMTotal, VRAMFree: d.VRAMFree, TorchVRAMTotal: d.TorchVRAMTotal, TorchVRAMFree: d.TorchVRAMFree})
	}
	s.writeJSON(w, http.StatusOK, map[string]any{"system": sys, "devices": devices})
}

func (s *Server) getFeatures(w http.ResponseWriter, r *http.Request) {
	s.writeJSON(w, http.StatusOK, s.features())
}

// postFree unloads models and drops caches on request. ComfyUI sets flags that the
// worker acts on between prompts; the memory manager here never unloads a model in use,
// so acting at once is safe.
func (s *Server) postFree(w http.ResponseWriter, r *http.Request) {
	var body struct {
		UnloadModels any `json:"unload_models"`
		FreeMemory   any `json:"free_memory"`
	}
	if !s.readJSON(w, r, s.opts.MaxPromptSize, &body) {
		return
	}
	unload, free := truthy(body.UnloadModels), truthy(body.FreeMemory)
	if s.opts.Memory != nil {
		if unload {
			s.opts.Memory.UnloadAll()
		}
		if free {
			s.opts.Memory.FreeMemory()
		}
	}
	if free && s.engine != nil {
		s.engine.FreeMemory() // the executor's cached node outputs
	}
	s.log.Info("free", "unload_models", unload, "free_memory", free)
	w.WriteHeader(http.StatusOK)
}

// getExtensions lists the front end's extension scripts (extensions/**/*.js of the
// static files) as absolute URL paths.
func (s *Server) getExtensions(w http.ResponseWriter, r *http.Request) {
	out := []string{}
	if s.opts.Static != nil {
		_ = fs.WalkDir(s.opts.Static, "extensions", func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil // no extensions folder
			}
			if !d.IsDir() && strings.HasSuffix(p, ".js") {
				out = append(out, "/"+path.Clean(p))
			}
			return nil
		})
	}
	sort.Strings(out)
	s.writeJSON(w, http.StatusOK, out)
}
