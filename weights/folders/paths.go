package folders

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
)

// Errors a caller branches on (the server maps them to HTTP status codes).
var (
	// ErrUnknownFolder: the folder name is not one of Folders().
	ErrUnknownFolder = errors.New("unknown model folder")
	// ErrNotFound: the name is valid but no directory of the folder holds such a file.
	ErrNotFound = errors.New("model not found")
	// ErrInvalidName: the name is empty, absolute, not clean, or climbs out with "..".
	ErrInvalidName = errors.New("invalid model name")
	// ErrEscapes: the name resolves, through a symbolic link, outside its directory.
	ErrEscapes = errors.New("model path escapes its folder")
)

// Options configure New.
type Options struct {
	// BaseDir holds models/ and custom_nodes/ (ComfyUI's --base-directory). Empty means
	// the working directory.
	BaseDir string
	// ModelsDir replaces BaseDir/models as the parent of the model folders (ComfyUI's
	// --models-directory); custom_nodes stays under BaseDir. Empty means BaseDir/models.
	ModelsDir string
	// ExtraConfigs are extra_model_paths.yaml files (--extra-model-paths-config), read
	// in order.
	ExtraConfigs []string
	// ConfineLinks keeps model files inside their directories: a symbolic link whose
	// target lies outside the directory it was found in is then neither listed nor
	// resolved. By default such links are followed, as ComfyUI follows them: a link
	// in a model folder is the user's way to use a model kept on another drive.
	ConfineLinks bool
	// Logger receives debug messages about skipped entries; nil discards them.
	Logger *slog.Logger
}

// Paths is the set of model folders and their directories. It is safe for concurrent
// use; listings are cached per folder and rescanned when a directory changes.
type Paths struct {
	base         string
	models       string
	confineLinks bool
	log          *slog.Logger

	mu      sync.Mutex // guards order and folders (not the scans, see folder.mu)
	order   []string
	folders map[string]*folder
}

type folder struct {
	name string
	exts []string // see folderSpec.exts
	// shares is the folder whose directories this one searches (ComfyUI-GGUF's
	// unet_gguf and clip_gguf hold the very list of diffusion_models and text_encoders);
	// nil for a folder with directories of its own. Lock order: this folder's mu first.
	shares *folder

	mu    sync.Mutex // guards dirs and cache
	dirs  []string   // absolute, cleaned, in search order
	cache *scan
}

// syncDirs copies the shared folder's directories into f.dirs; f.mu must be held.
func (f *folder) syncDirs() {
	if f.shares == nil {
		return
	}
	f.shares.mu.Lock()
	f.dirs = slices.Clone(f.shares.dirs)
	f.shares.mu.Unlock()
}

// New builds the default layout under opts.BaseDir and adds the directories of every
// extra config. It does not require any directory to exist.
func New(opts Options) (*Paths, error) {
	base := opts.BaseDir
	if base == "" {
		base = "."
	}
	abs, err := filepath.Abs(base)
	if err != nil {
		return nil, fmt.Errorf("folders: base directory %q: %w", base, err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	models := filepath.Join(abs, "models")
	if opts.ModelsDir != "" {
		if models, err = filepath.Abs(opts.ModelsDir); err != nil {
			return nil, fmt.Errorf("folders: models directory %q: %w", opts.ModelsDir, err)
		}
	}
	p := &Paths{base: abs, models: models, confineLinks: opts.ConfineLinks, log: log, folders: map[string]*folder{}}
	for _, spec := range defaultLayout() {
		f := &folder{name: spec.name, exts: spec.exts}
		for _, d := range spec.dirs {
			if rel, ok := strings.CutPrefix(d, "models/"); ok {
				f.dirs = append(f.dirs, filepath.Join(models, filepath.FromSlash(rel)))
			} else {
				f.dirs = append(f.dirs, filepath.Join(abs, filepath.FromSlash(d)))
			}
		}
		p.order = append(p.order, spec.name)
		p.folders[spec.name] = f
	}
	for _, cfg := range opts.ExtraConfigs {
		if err := p.LoadExtraConfig(cfg); err != nil {
			return nil, err
		}
	}
	p.addGGUFViews()
	return p, nil
}

// ggufViews are the folders ComfyUI-GGUF adds when it loads (after the extra configs):
// the .gguf files of an existing folder's directories.
var ggufViews = []struct{ name, shares string }{
	{"unet_gguf", "diffusion_models"},
	{"clip_gguf", "text_encoders"},
}

// addGGUFViews adds unet_gguf and clip_gguf. As with ComfyUI-GGUF, a folder of that name
// an extra config made keeps its place in the order but gives up its directories, with
// a warning naming them (ComfyUI-GGUF's loaders resolve through the shared folder, so
// files there could not be loaded anyway).
func (p *Paths) addGGUFViews() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, v := range ggufViews {
		view := &folder{name: v.name, exts: []string{".gguf"}, shares: p.folders[v.shares]}
		if old, ok := p.folders[v.name]; ok {
			p.log.Warn("extra model paths under this folder are ignored: it lists the .gguf files of another folder; add the directories to that folder instead",
				"folder", v.name, "shares", v.shares, "ignored", old.dirs)
		} else {
			p.order = append(p.order, v.name)
		}
		p.folders[v.name] = view
	}
}

// BaseDir returns the absolute base directory.
func (p *Paths) BaseDir() string { return p.base }

// ModelsDir returns the absolute directory holding the default model folders
// (BaseDir/models unless Options.ModelsDir).
func (p *Paths) ModelsDir() string { return p.models }

// Folders returns the folder names in ComfyUI's order (the GET /models list), followed
// by folders that extra configs introduced, in the order they appeared, then
// ComfyUI-GGUF's unet_gguf and clip_gguf.
func (p *Paths) Folders() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.order)
}

// Has reports whether folder (or its legacy alias) is known.
func (p *Paths) Has(folder string) bool {
	_, err := p.folder(folder)
	return err == nil
}

// Dirs returns the directories searched for folder, first one first (the first is
// where a model of that kind is saved by default).
func (p *Paths) Dirs(folder string) ([]string, error) {
	f, err := p.folder(folder)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.syncDirs()
	return slices.Clone(f.dirs), nil
}

// AddDir adds dir to folder's search directories, as ComfyUI's
// folder_paths.add_model_folder_path does: a new directory goes last, or first when
// isDefault; an existing one is moved first when isDefault. An unknown folder is
// created and accepts files of any extension. A directory added to unet_gguf or
// clip_gguf goes to the folder whose directories they share, as the shared list does
// in ComfyUI-GGUF.
func (p *Paths) AddDir(folderName, dir string, isDefault bool) {
	name := Canonical(folderName)
	dir = filepath.Clean(dir)
	p.mu.Lock()
	f, ok := p.folders[name]
	if !ok {
		f = &folder{name: name}
		p.folders[name] = f
		p.order = append(p.order, name)
	}
	if f.shares != nil {
		f = f.shares
	}
	p.mu.Unlock()

	f.mu.Lock()
	defer f.mu.Unlock()
	if i := slices.Index(f.dirs, dir); i >= 0 {
		if isDefault && i != 0 {
			f.dirs = slices.Delete(f.dirs, i, i+1)
			f.dirs = slices.Insert(f.dirs, 0, dir)
		}
	} else if isDefault {
		f.dirs = slices.Insert(f.dirs, 0, dir)
	} else {
		f.dirs = append(f.dirs, dir)
	}
	f.cache = nil
}

func (p *Paths) folder(name string) (*folder, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f, ok := p.folders[Canonical(name)]
	if !ok {
		return nil, fmt.Errorf("folders: %q: %w", name, ErrUnknownFolder)
	}
	return f, nil
}

// List returns the model names of folder: every accepted file under any of its
// directories (".git" skipped), as slash-separated paths relative to that directory,
// sorted, without duplicates. The scan is cached and redone only when a directory's
// modification time changed or a directory appeared or vanished.
func (p *Paths) List(folder string) ([]string, error) {
	f, err := p.folder(folder)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.syncDirs()
	if f.cache == nil || !f.cache.fresh(f.dirs) {
		f.cache = p.scanFolder(f)
	}
	return slices.Clone(f.cache.names), nil
}

// ListExtensions lists the files of folder's directories whose extension is one of
// exts (lowercase, with the dot), named and ordered as List names them. ComfyUI-GGUF
// lists ".gguf" files of the diffusion_models and text_encoders directories this way
// (its "unet_gguf" and "clip_gguf" keys, which share those folders' directories). The
// listing is not cached.
func (p *Paths) ListExtensions(folderName string, exts ...string) ([]string, error) {
	f, err := p.folder(folderName)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.syncDirs()
	view := &folder{name: f.name, exts: exts, dirs: slices.Clone(f.dirs)}
	f.mu.Unlock()
	return p.scanFolder(view).names, nil
}

// Resolve returns the path of the file called name in folder: the first of the
// folder's directories that holds it wins. A name that is empty, absolute, not in clean
// form or that contains a ".." element is refused with ErrInvalidName; with
// Options.ConfineLinks, a file reached through a link that leaves its directory is
// refused with ErrEscapes.
func (p *Paths) Resolve(folder, name string) (string, error) {
	if err := CheckName(name); err != nil {
		return "", fmt.Errorf("folders: %s: %w", folder, err)
	}
	f, err := p.folder(folder)
	if err != nil {
		return "", err
	}
	f.mu.Lock()
	f.syncDirs()
	dirs := slices.Clone(f.dirs)
	f.mu.Unlock()
	for _, dir := range dirs {
		full := filepath.Join(dir, filepath.FromSlash(name))
		st, err := os.Stat(full)
		if err != nil || st.IsDir() {
			continue
		}
		if p.confineLinks {
			inside, err := resolvesInside(dir, full)
			if err != nil {
				return "", fmt.Errorf("folders: %s: %q: %w", folder, name, err)
			}
			if !inside {
				return "", fmt.Errorf("folders: %s: %q: %w", folder, name, ErrEscapes)
			}
		}
		return full, nil
	}
	return "", fmt.Errorf("folders: %s: %q: %w", folder, name, ErrNotFound)
}

// CheckName reports whether name is an acceptable model name: non-empty, relative,
// slash-separated, in clean form (no "//", "./" or trailing "/"), without "..", NUL
// or backslash elements. ComfyUI clamps ".." at the folder root instead; refusing it
// is stricter and keeps a prompt from naming files it did not list.
func CheckName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty", ErrInvalidName)
	case strings.ContainsRune(name, 0):
		return fmt.Errorf("%w: %q contains NUL", ErrInvalidName, name)
	case strings.HasPrefix(name, "/") || filepath.IsAbs(name):
		return fmt.Errorf("%w: %q is absolute", ErrInvalidName, name)
	case strings.ContainsRune(name, '\\'):
		return fmt.Errorf("%w: %q contains a backslash", ErrInvalidName, name)
	case path.Clean(name) != name:
		return fmt.Errorf("%w: %q is not in clean form", ErrInvalidName, name)
	}
	for _, elem := range strings.Split(name, "/") {
		if elem == ".." {
			return fmt.Errorf("%w: %q climbs out of its folder", ErrInvalidName, name)
		}
	}
	return nil
}

// resolvesInside reports whether target, with every link followed, lies inside root
// (also with links followed).
func resolvesInside(root, target string) (bool, error) {
	realRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		return false, err
	}
	realTarget, err := filepath.EvalSymlinks(target)
	if err != nil {
		return false, err
	}
	return within(realRoot, realTarget), nil
}

// within reports whether p is root or below it; both must be clean absolute paths.
func within(root, p string) bool {
	if p == root {
		return true
	}
	if root == string(filepath.Separator) {
		return strings.HasPrefix(p, root)
	}
	return strings.HasPrefix(p, root+string(filepath.Separator))
}

// ResolveDir is Resolve for a directory model (a diffusers pipeline folder): the first
// of the folder's directories holding a directory of that name.
func (p *Paths) ResolveDir(folder, name string) (string, error) {
	if err := CheckName(name); err != nil {
		return "", fmt.Errorf("folders: %s: %w", folder, err)
	}
	f, err := p.folder(folder)
	if err != nil {
		return "", err
	}
	f.mu.Lock()
	dirs := slices.Clone(f.dirs)
	f.mu.Unlock()
	for _, dir := range dirs {
		full := filepath.Join(dir, filepath.FromSlash(name))
		if st, err := os.Stat(full); err != nil || !st.IsDir() {
			continue
		}
		if p.confineLinks {
			inside, err := resolvesInside(dir, full)
			if err != nil {
				return "", fmt.Errorf("folders: %s: %q: %w", folder, name, err)
			}
			if !inside {
				return "", fmt.Errorf("folders: %s: %q: %w", folder, name, ErrEscapes)
			}
		}
		return full, nil
	}
	return "", fmt.Errorf("folders: %s: %q: %w", folder, name, ErrNotFound)
}

// maxDirModels bounds ListDirs' walk of one directory.
const (
	maxDirModels     = 10000
	maxDirModelDepth = 8
)

// ListDirs lists the directories under the folder's directories that hold a file
// named marker (DiffusersLoader's model_index.json), as slash-separated names relative
// to their directory, sorted, each once; dot-entries are skipped, at most 8 levels
// and 10,000 entries per directory are looked at.
func (p *Paths) ListDirs(folder, marker string) ([]string, error) {
	dirs, err := p.Dirs(folder)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []string
	for _, root := range dirs {
		n := 0
		_ = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			n++
			rel, rerr := filepath.Rel(root, path)
			if rerr != nil || n > maxDirModels {
				return filepath.SkipAll
			}
			if rel == "." {
				return nil
			}
			if strings.HasPrefix(d.Name(), ".") || strings.Count(rel, string(filepath.Separator)) >= maxDirModelDepth {
				return filepath.SkipDir
			}
			if st, err := os.Stat(filepath.Join(path, marker)); err == nil && st.Mode().IsRegular() {
				name := filepath.ToSlash(rel)
				if !seen[name] {
					seen[name] = true
					out = append(out, name)
				}
			}
			return nil
		})
	}
	slices.Sort(out)
	return out, nil
}
