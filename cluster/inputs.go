package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/forgeflow/forgeflow/executor"
)

// Input files travel with their prompt. A front that takes a prompt publishes every
// file of its input folder that the prompt names (LoadImage's image, a mask, ...) into
// the inputs object store, named by the SHA-256 of its content; the job record lists
// them as inputRefs. The worker that leases the prompt writes each one into its own
// input folder under the name the prompt uses, unless a file with that content is
// already there (a shared folder, an earlier prompt). Content naming makes a
// re-upload of the same image free and two different images under one name distinct.

// Bounds on what one prompt ships: ComfyUI's uploads are images and masks.
const (
	maxInputFiles = 64
	maxInputBytes = 512 << 20
	// inputsMaxAge is how long the cluster keeps an input file: a prompt left
	// pending for longer runs with whatever its worker's input folder holds.
	inputsMaxAge = 7 * 24 * time.Hour
)

// inputRef is an input file a job names: its path under the input folder (slashes)
// and the hex SHA-256 of its content, which is also its object's name.
type inputRef struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
}

// inputNames returns the input-folder paths a job's literal inputs may name: every
// string value that is a local path, without ComfyUI's " [input]" annotation (values
// annotated [output] or [temp] name other folders and are left alone).
func inputNames(job *executor.Job) []string {
	var out []string
	for _, n := range job.Prompt {
		if n == nil {
			continue
		}
		for _, v := range n.Inputs {
			s, ok := v.(string)
			if !ok || s == "" || strings.HasSuffix(s, "[output]") || strings.HasSuffix(s, "[temp]") {
				continue
			}
			s = strings.TrimSuffix(s, " [input]")
			if strings.ContainsRune(s, 0) || strings.Contains(s, `\`) || !filepath.IsLocal(filepath.FromSlash(s)) {
				continue
			}
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// publishInputs uploads the files of the input folder that job names (those that
// exist there as regular files) and returns their references.
func (q *Queue) publishInputs(ctx context.Context, job *executor.Job) ([]inputRef, error) {
	if q.opts.InputDir == "" {
		return nil, nil
	}
	names := inputNames(job)
	if len(names) == 0 {
		return nil, nil
	}
	root, err := os.OpenRoot(q.opts.InputDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil // no input folder: nothing the prompt names is there
	}
	if err != nil {
		return nil, fmt.Errorf("cluster: input folder: %w", err)
	}
	defer root.Close()
	var refs []inputRef
	var total int64
	for _, name := range names {
		f, err := root.Open(filepath.FromSlash(name))
		if err != nil {
			continue // not a file of the input folder: a model name, a prompt text ...
		}
		ref, size, err := q.publishInput(ctx, f, name, len(refs), total)
		f.Close()
		if err != nil {
			return nil, err
		}
		if size >= 0 {
			refs = append(refs, ref)
			total += size
		}
	}
	return refs, nil
}

// publishInput uploads one open input file unless the store has its content already;
// size is -1 when f is not a regular file (a folder).
func (q *Queue) publishInput(ctx context.Context, f *os.File, name string, files int, total int64) (inputRef, int64, error) {
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return inputRef{}, -1, nil
	}
	if files >= maxInputFiles || total+st.Size() > maxInputBytes {
		return inputRef{}, 0, fmt.Errorf("cluster: the prompt names more input files than a prompt may carry (%d files, %d MiB)", maxInputFiles, maxInputBytes>>20)
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return inputRef{}, 0, fmt.Errorf("cluster: input %s: %w", name, err)
	}
	ref := inputRef{Name: name, SHA256: hex.EncodeToString(h.Sum(nil))}
	// The store forgets an object inputsMaxAge after its upload: one uploaded long
	// ago is uploaded again rather than trusted to outlive this prompt's wait.
	if info, err := q.inputs.GetInfo(ctx, ref.SHA256); err == nil && time.Since(info.ModTime) < inputsMaxAge/2 {
		return ref, st.Size(), nil
	} else if err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return inputRef{}, 0, fmt.Errorf("cluster: input %s: %w", name, err)
	}
	err = q.retry(ctx, func(c context.Context) error {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return err
		}
		_, err := q.inputs.Put(c, jetstream.ObjectMeta{Name: ref.SHA256}, f)
		return err
	})
	if err != nil {
		return inputRef{}, 0, fmt.Errorf("cluster: upload input %s: %w", name, err)
	}
	return ref, st.Size(), nil
}

// fetchInputs writes the input files a leased job names into this worker's input
// folder. A file that cannot be fetched is logged and left to the node that reads it,
// which then fails with its own message.
func (q *Queue) fetchInputs(ctx context.Context, id string, refs []inputRef) {
	if len(refs) == 0 || q.opts.InputDir == "" {
		return
	}
	if err := os.MkdirAll(q.opts.InputDir, 0o755); err != nil {
		q.log.Warn("input folder", "prompt_id", id, "err", err)
		return
	}
	root, err := os.OpenRoot(q.opts.InputDir)
	if err != nil {
		q.log.Warn("input folder", "prompt_id", id, "err", err)
		return
	}
	defer root.Close()
	for _, ref := range refs {
		if err := q.fetchInput(ctx, root, ref); err != nil {
			q.log.Warn("fetch input file of a prompt", "prompt_id", id, "file", ref.Name, "err", err)
		}
	}
}

func (q *Queue) fetchInput(ctx context.Context, root *os.Root, ref inputRef) error {
	rel := filepath.FromSlash(ref.Name)
	if !filepath.IsLocal(rel) {
		return errors.New("not a path inside the input folder")
	}
	if sum, err := fileSHA256(root, rel); err == nil && sum == ref.SHA256 {
		return nil
	}
	res, err := q.inputs.Get(ctx, ref.SHA256)
	if err != nil {
		return err
	}
	defer res.Close()
	if dir := filepath.Dir(rel); dir != "." {
		if err := root.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	tmp := filepath.Join(filepath.Dir(rel), "."+path.Base(ref.Name)+".part-"+newGen()[:8])
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(f, h), res)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && hex.EncodeToString(h.Sum(nil)) != ref.SHA256 {
		err = errors.New("content does not match its SHA-256")
	}
	if err == nil {
		err = root.Rename(tmp, rel)
	}
	if err != nil {
		_ = root.Remove(tmp)
	}
	return err
}

// fileSHA256 is the hex SHA-256 of a file under root.
func fileSHA256(root *os.Root, rel string) (string, error) {
	f, err := root.Open(rel)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return "", fs.ErrInvalid
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
