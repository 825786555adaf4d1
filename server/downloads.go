package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/forgeflow/forgeflow/weights/folders"
	"github.com/forgeflow/forgeflow/weights/pull"
)

// Model downloads asked by the editor (forgeflow's own routes; ComfyUI has none):
//
//	GET  /forgeflow/models/downloads          {"enabled", "reason", "hosts", "downloads": [...]}
//	POST /forgeflow/models/download           {"url", "folder", "name"?, "sha256"?} → 202 and the download,
//	                                          or {"starter": NAME} → 202 and its downloads
//	POST /forgeflow/models/download/{id}/cancel
//
// Progress goes to every websocket client as "forgeflow_model_download" messages
// whose data is the download's JSON. A download is allowed only when the server
// listens on loopback addresses only or checks an access token (then every request
// that gets here carried it), only from the allow-listed hosts (pull.Policy: the URL
// asked for must be on the list, and no connection of the transfer, redirects
// included, reaches a private address unless its host is listed), only into the first
// directory of a model folder under a checked name, never a pickle-based file.

// DownloadOptions configure the download routes.
type DownloadOptions struct {
	// Hosts are the hosts downloads may be asked from; an entry allows its subdomains.
	// Nil means pull.DefaultHosts (Hugging Face and Civitai).
	Hosts []string
	// MaxConcurrent is how many downloads run at once (more wait); 0 means 2.
	MaxConcurrent int
	// HFEndpoint replaces https://huggingface.co for hf: sources (a mirror).
	HFEndpoint string
	// Tokenizers say where each tokenizer a starter needs ("clip", "t5") goes and
	// whether one is already there; a starter's missing tokenizers are fetched with
	// it. Nil fetches none.
	Tokenizers map[string]TokenizerPlace
}

// TokenizerPlace tells where a tokenizer's files go (the first directory it is
// looked for in) and whether one is found already.
type TokenizerPlace func() (dir string, present bool)

// downloadEvent is the websocket message type of download progress.
const downloadEvent = "forgeflow_model_download"

// Download states.
const (
	dlQueued    = "queued"
	dlRunning   = "running"
	dlDone      = "done"
	dlFailed    = "error"
	dlCancelled = "cancelled"
)

// keptDownloads is how many finished downloads GET /forgeflow/models/downloads keeps,
// and maxActiveDownloads how many may be queued or running at once.
const (
	keptDownloads      = 50
	maxActiveDownloads = 16
)

// Refusals of start.
var (
	errDownloadRunning  = errors.New("already being downloaded")
	errTooManyDownloads = errors.New("too many downloads queued")
)

// download is one download's state, as the routes and events show it.
type download struct {
	ID       string  `json:"id"`
	URL      string  `json:"url"` // without its query (signed URLs carry credentials there)
	Folder   string  `json:"folder"`
	Name     string  `json:"name"`
	Status   string  `json:"status"`
	Done     int64   `json:"done"`
	Total    int64   `json:"total"`
	Rate     float64 `json:"rate"`
	ETA      float64 `json:"eta"` // seconds, -1 when unknown
	Checked  bool    `json:"sha256_checked"`
	Existed  bool    `json:"existed"`
	Error    string  `json:"error,omitempty"`
	Started  float64 `json:"started"`
	Finished float64 `json:"finished,omitempty"`

	cancel context.CancelFunc
}

// downloads is the server's download manager.
type downloads struct {
	opts   DownloadOptions
	policy *pull.Policy
	slots  chan struct{}
	ctx    context.Context
	stop   context.CancelFunc
	wg     sync.WaitGroup

	mu   sync.Mutex
	list []*download // newest last
}

func newDownloads(o DownloadOptions) *downloads {
	if o.Hosts == nil {
		o.Hosts = pull.DefaultHosts
	}
	if o.MaxConcurrent <= 0 {
		o.MaxConcurrent = 2
	}
	ctx, stop := context.WithCancel(context.Background())
	return &downloads{opts: o, policy: &pull.Policy{Hosts: o.Hosts}, slots: make(chan struct{}, o.MaxConcurrent), ctx: ctx, stop: stop}
}

// close cancels every download and waits for them (partial files stay, to resume).
func (d *downloads) close() {
	d.stop()
	d.wg.Wait()
}

func (s *Server) downloadRoutes() {
	if s.opts.Downloads != nil {
		s.dl = newDownloads(*s.opts.Downloads)
	}
	s.route("GET /forgeflow/models/downloads", s.getDownloads)
	s.route("POST /forgeflow/models/download", s.postDownload)
	s.route("POST /forgeflow/models/download/{id}/cancel", s.cancelDownload)
}

// downloadRefusal says why this server takes no downloads, or "".
func (s *Server) downloadRefusal() string {
	switch {
	case s.dl == nil:
		return "downloads through the server are off (forgeflow serve --download-hosts)"
	case s.opts.Models == nil:
		return "this server has no model folders"
	case s.opts.AuthToken == "" && !s.hosts.on:
		return "this server listens beyond loopback without an access token; start it with --auth-token to allow downloads"
	}
	return ""
}

func (s *Server) getDownloads(w http.ResponseWriter, r *http.Request) {
	out := struct {
		Enabled   bool        `json:"enabled"`
		Reason    string      `json:"reason,omitempty"`
		Hosts     []string    `json:"hosts"`
		Downloads []*download `json:"downloads"`
		Starters  []starter   `json:"starters"`
	}{Hosts: []string{}, Downloads: []*download{}, Starters: []starter{}}
	out.Reason = s.downloadRefusal()
	out.Enabled = out.Reason == ""
	if s.dl != nil {
		out.Hosts = s.dl.opts.Hosts
		out.Downloads = s.dl.snapshot()
		out.Starters = s.starters()
	}
	s.writeJSON(w, http.StatusOK, out)
}

// downloadRequest is POST /forgeflow/models/download's body: the fields of a ComfyUI
// workflow's "models" entry ({name, url, directory}), "folder" being accepted for
// "directory"; or the name of a starter model (starters.go).
type downloadRequest struct {
	URL       string `json:"url"`
	Folder    string `json:"folder"`
	Directory string `json:"directory"`
	Name      string `json:"name"`
	SHA256    string `json:"sha256"`
	Starter   string `json:"starter"`
}

// refusal is a download request the server turns down: the HTTP status and error.
type refusal struct {
	status       int
	msg, details string
}

func (s *Server) postDownload(w http.ResponseWriter, r *http.Request) {
	if reason := s.downloadRefusal(); reason != "" {
		s.writeError(w, http.StatusForbidden, "downloads not allowed", reason)
		return
	}
	var req downloadRequest
	if !s.readJSON(w, r, 64<<10, &req) {
		return
	}
	if req.Starter != "" {
		s.postStarter(w, req.Starter)
		return
	}
	if req.Folder == "" {
		req.Folder = req.Directory
	}
	src, err := pull.ParseSource(req.URL, s.dl.opts.HFEndpoint)
	if err != nil {
		s.writeError(w, http.StatusBadRequest, "invalid download URL", err.Error())
		return
	}
	if req.Name != "" {
		src.Name = req.Name
	}
	src.SHA256 = req.SHA256
	dl, ref := s.queueDownload(src, req.Folder)
	if ref != nil {
		s.writeError(w, ref.status, ref.msg, ref.details)
		return
	}
	s.writeJSON(w, http.StatusAccepted, dl)
}

// queueDownload checks a download into a model folder and starts it.
func (s *Server) queueDownload(src pull.Source, folder string) (*download, *refusal) {
	if err := s.dl.policy.Check(src.URL); err != nil {
		return nil, &refusal{http.StatusForbidden, "download host not allowed", err.Error()}
	}
	if folder == "custom_nodes" || !s.isModelFolder(folder) {
		return nil, &refusal{http.StatusBadRequest, "unknown model folder", folder}
	}
	dirs, err := s.opts.Models.Dirs(folder)
	if err != nil || len(dirs) == 0 {
		return nil, &refusal{http.StatusBadRequest, "model folder has no directory", folder}
	}
	if src.Name == "" {
		if u, err := url.Parse(src.URL); err == nil && strings.Contains(path.Base(u.Path), ".") {
			src.Name = path.Base(u.Path)
		}
	}
	if src.Name != "" {
		if pull.IsPickle(src.Name) {
			return nil, &refusal{http.StatusBadRequest, "pickle-based model file refused",
				src.Name + ": the server downloads no .ckpt/.pt/.pth/.bin/.pkl files (they can carry code); use a .safetensors or .gguf file, or forgeflow models pull --allow-pickle"}
		}
		if err := folders.CheckName(src.Name); err != nil {
			return nil, &refusal{http.StatusBadRequest, "invalid model name", err.Error()}
		}
		if _, err := s.opts.Models.Resolve(folder, src.Name); err == nil {
			return nil, &refusal{http.StatusConflict, "model already present", folder + "/" + src.Name}
		}
	}
	return s.startDownload(src, folder, dirs[0])
}

// startDownload starts a checked download into dir.
func (s *Server) startDownload(src pull.Source, folder, dir string) (*download, *refusal) {
	dl, err := s.dl.start(s, src, folder, dir)
	switch {
	case errors.Is(err, errTooManyDownloads):
		return nil, &refusal{http.StatusTooManyRequests, "too many downloads", err.Error()}
	case err != nil:
		return nil, &refusal{http.StatusConflict, "download already running", err.Error()}
	}
	s.log.Info("model download", "id", dl.ID, "url", dl.URL, "folder", dl.Folder, "name", dl.Name)
	return dl, nil
}

func (s *Server) cancelDownload(w http.ResponseWriter, r *http.Request) {
	if s.dl == nil || !s.dl.cancelID(r.PathValue("id")) {
		s.writeError(w, http.StatusNotFound, "no such download", r.PathValue("id"))
		return
	}
	w.WriteHeader(http.StatusOK)
}

// start registers a download and runs it when a slot is free.
func (d *downloads) start(s *Server, src pull.Source, folder, dir string) (*download, error) {
	u, _ := url.Parse(src.URL)
	u.RawQuery = ""
	var idb [8]byte
	_, _ = rand.Read(idb[:])
	ctx, cancel := context.WithCancel(d.ctx)
	dl := &download{ID: hex.EncodeToString(idb[:]), URL: u.String(), Folder: folder, Name: src.Name, Status: dlQueued,
		Total: -1, ETA: -1, Started: unixSeconds(time.Now()), cancel: cancel}
	d.mu.Lock()
	active := 0
	for _, o := range d.list {
		if o.Status != dlQueued && o.Status != dlRunning {
			continue
		}
		active++
		if o.URL == dl.URL || (dl.Name != "" && o.Folder == folder && o.Name == dl.Name) {
			d.mu.Unlock()
			cancel()
			return nil, fmt.Errorf("%s/%s: %w (id %s)", o.Folder, o.Name, errDownloadRunning, o.ID)
		}
	}
	if active >= maxActiveDownloads {
		d.mu.Unlock()
		cancel()
		return nil, fmt.Errorf("%w: %d are queued or running", errTooManyDownloads, active)
	}
	d.list = append(d.list, dl)
	d.trim()
	view := *dl
	d.mu.Unlock()
	s.Publish(Event{Type: downloadEvent, Data: &view, Broadcast: true})

	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		defer cancel()
		select {
		case d.slots <- struct{}{}:
			defer func() { <-d.slots }()
		case <-ctx.Done():
			d.finish(s, dl, nil, ctx.Err())
			return
		}
		d.update(s, dl, func(x *download) { x.Status = dlRunning })
		res, err := pull.Fetch(ctx, src, dir, pull.Options{
			Policy:        d.policy,
			ProgressEvery: 500 * time.Millisecond,
			Progress: func(p pull.Progress) {
				d.update(s, dl, func(x *download) {
					x.Name, x.Done, x.Total, x.Rate = p.Name, p.Done, p.Total, p.Rate
					x.ETA = -1
					if p.ETA >= 0 {
						x.ETA = p.ETA.Seconds()
					}
				})
			},
		})
		d.finish(s, dl, res, err)
	}()
	return &view, nil
}

// finish records a download's outcome and announces it.
func (d *downloads) finish(s *Server, dl *download, res *pull.Result, err error) {
	d.update(s, dl, func(x *download) {
		x.Finished = unixSeconds(time.Now())
		x.ETA = 0
		switch {
		case err == nil:
			x.Status, x.Name, x.Done, x.Total, x.Checked, x.Existed = dlDone, res.Name, res.Size, res.Size, res.Checked, res.Existed
		case errors.Is(err, context.Canceled):
			x.Status = dlCancelled
		default:
			x.Status, x.Error = dlFailed, err.Error()
		}
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		s.log.Warn("model download failed", "id", dl.ID, "url", dl.URL, "err", err)
	}
}

// update changes a download under the lock and publishes its new state.
func (d *downloads) update(s *Server, dl *download, f func(*download)) {
	d.mu.Lock()
	f(dl)
	view := *dl
	d.mu.Unlock()
	s.Publish(Event{Type: downloadEvent, Data: &view, Broadcast: true})
}

func (d *downloads) snapshot() []*download {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]*download, len(d.list))
	for i, dl := range d.list {
		v := *dl
		out[i] = &v
	}
	return out
}

func (d *downloads) cancelID(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, dl := range d.list {
		if dl.ID == id && (dl.Status == dlQueued || dl.Status == dlRunning) {
			dl.cancel()
			return true
		}
	}
	return false
}

// trim drops the oldest finished downloads beyond keptDownloads; d.mu is held.
func (d *downloads) trim() {
	for len(d.list) > keptDownloads {
		i := slices.IndexFunc(d.list, func(x *download) bool { return x.Status != dlQueued && x.Status != dlRunning })
		if i < 0 {
			return
		}
		d.list = slices.Delete(d.list, i, i+1)
	}
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }
