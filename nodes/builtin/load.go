package builtin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/forgeflow/forgeflow/graph"
	"github.com/forgeflow/forgeflow/nodes"
)

// LoadImage and LoadImageMask (nodes.py).

// imageExtensions are the extensions Python's mimetypes maps to an "image/…" type, which
// is how folder_paths.filter_files_content_types picks LoadImage's choices (case is
// ignored, as mimetypes retries with the lower-cased extension).
var imageExtensions = map[string]bool{
	".png": true, ".jpg": true, ".jpeg": true, ".jpe": true, ".gif": true, ".webp": true,
	".bmp": true, ".tif": true, ".tiff": true, ".ico": true, ".svg": true, ".avif": true,
	".heic": true, ".heif": true, ".ief": true, ".pbm": true, ".pgm": true, ".pnm": true,
	".ppm": true, ".ras": true, ".rgb": true, ".xbm": true, ".xpm": true, ".xwd": true,
	".jxl": true,
}

// Limits of the input folder walk behind the combo list.
const (
	maxListedFiles = 20000
	maxListDepth   = 8
)

// listInputFiles returns the files under dir, slash-separated and sorted, as LoadImage's
// combo lists them. ComfyUI lists only the folder's top level; forgeflow also lists its
// subfolders ("clipspace/x.png", "pasted/y.png"), which the front end's uploads create and
// ComfyUI accepts as values anyway. Hidden entries (".name") are skipped. onlyImages keeps
// files with an image extension.
func listInputFiles(dir string, onlyImages bool) []string {
	if dir == "" {
		return []string{}
	}
	files := []string{}
	root := os.DirFS(dir)
	_ = fs.WalkDir(root, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // unreadable entries are left out
		}
		if p == "." {
			return nil
		}
		if strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			if strings.Count(p, "/") >= maxListDepth {
				return fs.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		if onlyImages && !imageExtensions[strings.ToLower(filepath.Ext(p))] {
			return nil
		}
		files = append(files, p)
		if len(files) >= maxListedFiles {
			return fs.SkipAll
		}
		return nil
	})
	sort.Strings(files)
	return files
}

// InvalidFileError is LoadImage's VALIDATE_INPUTS failure; its text is ComfyUI's.
type InvalidFileError struct {
	Name string
	Err  error // why, for logs and errors.Is (fs.ErrNotExist, errOutsideFolder, …)
}

func (e *InvalidFileError) Error() string { return "Invalid image file: " + e.Name }

func (e *InvalidFileError) Unwrap() error { return e.Err }

// resolveAnnotated splits a file value into its folder and the path inside it, as
// folder_paths.annotated_filepath does: a " [output]", " [input]" or " [temp]" suffix
// picks that folder, anything else is in the input folder. The path must stay inside its
// folder: absolute paths and ".." are refused (ComfyUI itself does not check).
func resolveAnnotated(name string, dirs nodes.Dirs) (dir, rel string, err error) {
	rel, dir = name, dirs.Input
	for _, a := range []struct {
		suffix, dir string
	}{{"[output]", dirs.Output}, {"[input]", dirs.Input}, {"[temp]", dirs.Temp}} {
		if strings.HasSuffix(name, a.suffix) {
			// ComfyUI cuts len(suffix)+1 characters: the annotation and the space before it.
			rel = name[:max(0, len(name)-len(a.suffix)-1)]
			dir = a.dir
			break
		}
	}
	if dir == "" {
		return "", "", errors.New("no folder configured")
	}
	if strings.ContainsRune(rel, 0) || !filepath.IsLocal(filepath.FromSlash(rel)) || strings.Contains(rel, `\`) {
		return "", "", errOutsideFolder
	}
	return dir, filepath.FromSlash(rel), nil
}

// openInput opens the image file named by an input value, confined to its folder (an
// os.Root, so symbolic links cannot lead out of it either).
func openInput(name string, dirs nodes.Dirs) (*os.File, error) {
	dir, rel, err := resolveAnnotated(name, dirs)
	if err != nil {
		return nil, &InvalidFileError{Name: name, Err: err}
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, &InvalidFileError{Name: name, Err: err}
	}
	defer root.Close()
	f, err := root.Open(rel)
	if err != nil {
		return nil, &InvalidFileError{Name: name, Err: err}
	}
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		f.Close()
		if err == nil {
			err = errors.New("not a regular file")
		}
		return nil, &InvalidFileError{Name: name, Err: err}
	}
	return f, nil
}

// maxInputFile bounds the size of an image file LoadImage reads.
const maxInputFile = 1 << 30

func readInput(name string, dirs nodes.Dirs) ([]byte, error) {
	f, err := openInput(name, dirs)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxInputFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxInputFile {
		return nil, fmt.Errorf("image file %q is larger than %d bytes", name, maxInputFile)
	}
	return data, nil
}

// fileHash is LoadImage.IS_CHANGED: the SHA-256 of the file's content, in hex.
func fileHash(name string, dirs nodes.Dirs) (string, error) {
	f, err := openInput(name, dirs)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// imageFile is the shared part of LoadImage and LoadImageMask: the input file and its
// ComfyUI hooks.
type imageFile struct {
	opts  Options
	Image string `input:"image"`
}

// IsChanged is ComfyUI's IS_CHANGED (nodes.IsChanger): the file's content hash.
func (n *imageFile) IsChanged(env *nodes.Env) (string, error) {
	return fileHash(n.Image, n.opts.dirs(env))
}

// ValidateInputs is ComfyUI's VALIDATE_INPUTS (nodes.InputValidator): the file exists,
// is a regular file and lies inside its folder.
func (n *imageFile) ValidateInputs(env *nodes.Env) error {
	f, err := openInput(n.Image, n.opts.dirs(env))
	if err != nil {
		return err
	}
	return f.Close()
}

// imageInput is the "image" combo of the loaders: files of the input folder, checked by
// ValidateInputs rather than against the list (ComfyUI's VALIDATE_INPUTS), so that
// "sub/x.png [input]" is accepted.
func (o Options) imageInput(onlyImages bool) graph.Input {
	return graph.Input{Name: "image", Type: graph.TypeCombo, ImageUpload: true, CustomValidation: true,
		Choices: func() []string { return listInputFiles(o.Dirs.Input, onlyImages) }}
}

// LoadImage is ComfyUI's LoadImage.
type LoadImage struct{ imageFile }

// Schema implements nodes.Typed.
func (n *LoadImage) Schema() graph.Schema {
	return graph.Schema{
		Name: "LoadImage", DisplayName: "Load Image", Category: "image",
		Inputs:  []graph.Input{n.opts.imageInput(true)},
		Outputs: outputs("IMAGE", "MASK"),
	}
}

// Run implements nodes.Typed (nodes.py LoadImage.load_image): every frame of the file
// (EXIF orientation applied) whose size equals the first frame's becomes one image of
// the batch, RGB/255; the mask is 1 - alpha/255 where the file has alpha and a 64×64
// zero mask per frame where it has none, as ComfyUI returns. MPO files give their first
// frame.
func (n *LoadImage) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	data, err := readInput(n.Image, n.opts.dirs(env))
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: LoadImage: %w", err)
	}
	frames, _, err := decodeImage(data, env.MaxImagePixels)
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: LoadImage: %q: %w", n.Image, err)
	}
	w, h := frames[0].W, frames[0].H
	kept := frames[:0:0]
	for _, f := range frames {
		if f.W == w && f.H == h {
			kept = append(kept, f)
		}
	}
	im, err := NewImage(len(kept), h, w, 3)
	if err != nil {
		return nodes.Result{}, err
	}
	mh, mw := 64, 64
	if kept[0].Band {
		mh, mw = h, w
	}
	mask, err := NewMask(len(kept), mh, mw)
	if err != nil {
		return nodes.Result{}, err
	}
	for b, f := range kept {
		if err := ctx.Err(); err != nil {
			return nodes.Result{}, err
		}
		dst := im.Frame(b)
		for i, v := range f.RGB {
			dst[i] = float32(v) / 255
		}
		if f.Band && kept[0].Band {
			m := mask.Plane(b)
			for i, a := range f.Alpha {
				m[i] = 1 - float32(a)/255
			}
		}
	}
	return nodes.Outputs(im, mask)
}

// maskChannels are LoadImageMask's channel choices.
var maskChannels = []string{"alpha", "red", "green", "blue"}

// LoadImageMask is ComfyUI's LoadImageMask ("Load Image (as Mask)").
type LoadImageMask struct {
	imageFile
	Channel string `input:"channel"`
}

// Schema implements nodes.Typed.
func (n *LoadImageMask) Schema() graph.Schema {
	return graph.Schema{
		Name: "LoadImageMask", DisplayName: "Load Image (as Mask)", Category: "mask",
		Inputs:  []graph.Input{n.opts.imageInput(false), combo("channel", maskChannels...)},
		Outputs: outputs("MASK"),
	}
}

// Run implements nodes.Typed (nodes.py LoadImageMask.load_image): the first frame,
// converted to RGBA, gives one channel/255 as a [1, H, W] mask; alpha is inverted
// (1 - a/255). An image without alpha converts with alpha 255, so its alpha mask is 0.
func (n *LoadImageMask) Run(ctx context.Context, env *nodes.Env) (nodes.Result, error) {
	c := slices.Index(maskChannels, n.Channel)
	data, err := readInput(n.Image, n.opts.dirs(env))
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: LoadImageMask: %w", err)
	}
	frames, _, err := decodeImage(data, env.MaxImagePixels)
	if err != nil {
		return nodes.Result{}, fmt.Errorf("builtin: LoadImageMask: %q: %w", n.Image, err)
	}
	f := frames[0]
	m, err := NewMask(1, f.H, f.W)
	if err != nil {
		return nodes.Result{}, err
	}
	for i := range m.Pix {
		if c == 0 {
			m.Pix[i] = 1 - float32(f.Alpha[i])/255
		} else {
			m.Pix[i] = float32(f.RGB[3*i+c-1]) / 255
		}
	}
	return nodes.One(m, nil)
}

// Interface guards.
var (
	_ nodes.Typed = (*LoadImage)(nil)
	_ nodes.Typed = (*LoadImageMask)(nil)
)
