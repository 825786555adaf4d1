package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/forgeflow/forgeflow/executor"
)

// outputDirs are where a worker's engine writes files: output/NAME and temp/NAME
// under its base folders, so that the names two workers give files never collide.
// The UI outputs a worker publishes name the files by that subfolder, which is
// also the object's name in the outputs store.
type outputDirs struct {
	sub          string // the worker's subfolder: its name
	output, temp string
}

// outputFile is one file a run wrote, as the cluster names it.
type outputFile struct {
	object string // TYPE/SUBFOLDER/NAME in the object store, SUBFOLDER including the worker's
	local  string // the file on this worker's disk
	sent   bool
}

// rewriteUI returns a copy of a node's UI output (or a whole history's outputs, one
// level up) in which every file of type output or temp carries the worker's
// subfolder, and the files it names.
func (q *Queue) rewriteUI(v any) (any, []outputFile, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, nil, err
	}
	var generic any
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(&generic); err != nil {
		return nil, nil, err
	}
	var files []outputFile
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case []any:
			for _, it := range x {
				walk(it)
			}
		case map[string]any:
			name, _ := x["filename"].(string)
			typ, _ := x["type"].(string)
			if name != "" && (typ == "output" || typ == "temp") && !strings.ContainsAny(name, `/\`) {
				sub, _ := x["subfolder"].(string)
				dir := q.outputs.output
				if typ == "temp" {
					dir = q.outputs.temp
				}
				visible := path.Join(q.outputs.sub, filepath.ToSlash(sub))
				x["subfolder"] = visible
				files = append(files, outputFile{object: path.Join(typ, visible, name), local: filepath.Join(dir, filepath.FromSlash(sub), name)})
				return
			}
			for _, it := range x {
				walk(it)
			}
		}
	}
	walk(generic)
	return generic, files, nil
}

// PublishUI uploads the files a node's UI output names and returns the output as
// clients of any serve front must see it (worker subfolders added). A Worker calls
// it for each executed event of a prompt it holds, so a client can fetch an image as
// soon as it hears of it; Ack publishes whatever is left.
func (q *Queue) publishUI(ctx context.Context, h *held, ui map[string]any) (map[string]any, error) {
	if q.outputs == nil {
		return ui, nil
	}
	out, files, err := q.rewriteUI(ui)
	if err != nil {
		return nil, err
	}
	if err := q.upload(ctx, h, files); err != nil {
		return nil, err
	}
	m, _ := out.(map[string]any)
	return m, nil
}

// publishOutputs rewrites a history entry's outputs and uploads their files.
func (q *Queue) publishOutputs(ctx context.Context, h *held, e *executor.HistoryEntry) error {
	if q.outputs == nil || len(e.Outputs) == 0 {
		return nil
	}
	out, files, err := q.rewriteUI(e.Outputs)
	if err != nil {
		return fmt.Errorf("cluster: outputs of %q: %w", e.Prompt.ID, err)
	}
	m, _ := out.(map[string]any)
	e.Outputs = make(map[string]map[string]any, len(m))
	for k, v := range m {
		ui, _ := v.(map[string]any)
		e.Outputs[k] = ui
	}
	return q.upload(ctx, h, files)
}

// upload puts the files not yet sent into the object store, remembering them so a
// lost lease can take them back.
func (q *Queue) upload(ctx context.Context, h *held, files []outputFile) error {
	for _, f := range files {
		h.mu.Lock()
		seen := false
		for _, g := range h.files {
			seen = seen || g.object == f.object
		}
		if !seen {
			h.files = append(h.files, f)
		}
		h.mu.Unlock()
		if seen {
			continue
		}
		fh, err := os.Open(f.local)
		if err != nil {
			return fmt.Errorf("cluster: output %s: %w", f.object, err)
		}
		err = q.retry(ctx, func(c context.Context) error {
			if _, err := fh.Seek(0, io.SeekStart); err != nil {
				return err
			}
			_, err := q.objs.Put(c, jetstream.ObjectMeta{Name: f.object, Headers: map[string][]string{"Prompt-Id": {h.id}, "Lease": {h.gen}}}, fh)
			return err
		})
		fh.Close()
		if err != nil {
			return fmt.Errorf("cluster: upload %s: %w", f.object, err)
		}
		h.mu.Lock()
		for i := range h.files {
			if h.files[i].object == f.object {
				h.files[i].sent = true
			}
		}
		h.mu.Unlock()
	}
	return nil
}

// discardOutputs removes what a run that did not commit wrote: its objects and its
// local files, so a prompt run twice leaves one set of files.
func (q *Queue) discardOutputs(h *held) {
	h.mu.Lock()
	files := h.files
	h.files = nil
	h.mu.Unlock()
	for _, f := range files {
		if f.sent {
			if err := q.objs.Delete(context.Background(), f.object); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
				q.log.Warn("remove output of a run that did not commit", "object", f.object, "err", err)
			}
		}
		if err := os.Remove(f.local); err != nil && !errors.Is(err, fs.ErrNotExist) {
			q.log.Warn("remove output of a run that did not commit", "file", f.local, "err", err)
		}
	}
}

// FetchOutput copies the output file TYPE/SUBFOLDER/NAME that a worker published into
// dir (the serve front's folder of that type), for /view. It returns an error wrapping
// fs.ErrNotExist when no worker published it. The caller has checked the names; the
// file is written through os.Root so nothing lands outside dir.
func (q *Queue) FetchOutput(ctx context.Context, typ, subfolder, name, dir string) error {
	if typ != "output" && typ != "temp" {
		return fs.ErrNotExist
	}
	object := path.Join(typ, filepath.ToSlash(subfolder), name)
	res, err := q.objs.Get(ctx, object)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("cluster: output %s: %w", object, fs.ErrNotExist)
	}
	if err != nil {
		return fmt.Errorf("cluster: output %s: %w", object, err)
	}
	defer res.Close()
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	sub := filepath.FromSlash(subfolder)
	if sub != "" {
		if err := root.MkdirAll(sub, 0o755); err != nil {
			return err
		}
	}
	tmp := filepath.Join(sub, "."+name+".part-"+newGen()[:8])
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, res)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = root.Rename(tmp, filepath.Join(sub, name))
	}
	if err != nil {
		_ = root.Remove(tmp)
		return fmt.Errorf("cluster: output %s: %w", object, err)
	}
	return nil
}

// sweepOutputs removes the objects a lapsed lease (generation gen) of prompt id
// published before its worker died or hung: only a committed run's files stay.
func (q *Queue) sweepOutputs(id, gen string) {
	ctx, cancel := context.WithTimeout(q.ctx, time.Minute)
	defer cancel()
	list, err := q.objs.List(ctx)
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return
	}
	if err != nil {
		q.log.Warn("list outputs of a lapsed lease", "prompt_id", id, "err", err)
		return
	}
	for _, o := range list {
		if o.Headers.Get("Prompt-Id") != id || o.Headers.Get("Lease") != gen {
			continue
		}
		if err := q.objs.Delete(ctx, o.Name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
			q.log.Warn("remove output of a lapsed lease", "object", o.Name, "err", err)
		}
	}
}
