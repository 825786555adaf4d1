package folders

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// touch creates files (and their parent directories) under root.
func touch(t *testing.T, root string, names ...string) {
	t.Helper()
	for _, n := range names {
		p := filepath.Join(root, filepath.FromSlash(n))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestFoldersOrderMatchesComfyUI(t *testing.T) {
	p, err := New(Options{BaseDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	// folder_paths.folder_names_and_paths insertion order in ComfyUI 0.3.64, then the two
	// folders ComfyUI-GGUF adds when it loads.
	want := []string{"checkpoints", "configs", "loras", "vae", "text_encoders", "diffusion_models",
		"clip_vision", "style_models", "embeddings", "diffusers", "vae_approx", "controlnet", "gligen",
		"upscale_models", "custom_nodes", "hypernetworks", "photomaker", "classifiers", "model_patches",
		"audio_encoders", "unet_gguf", "clip_gguf"}
	if got := p.Folders(); !slices.Equal(got, want) {
		t.Fatalf("Folders() = %v\nwant %v", got, want)
	}
}

func TestListExtensionsAliasesSubfolders(t *testing.T) {
	base := t.TempDir()
	touch(t, base,
		"models/checkpoints/sd15.safetensors",
		"models/checkpoints/SDXL/base.SAFETENSORS",
		"models/checkpoints/SDXL/refiner.ckpt",
		"models/checkpoints/readme.txt",
		"models/checkpoints/.git/objects/x.safetensors",
		"models/checkpoints/.hidden.safetensors",
		"models/unet/flux1-dev.sft",
		"models/diffusion_models/flux1-schnell.safetensors",
		"models/diffusion_models/sub/model.gguf",
		"models/text_encoders/t5xxl.safetensors",
		"models/clip/clip_l.safetensors",
		"models/clip/t5xxl.safetensors", // duplicate name across the two dirs: listed once
		"models/configs/v1-inference.yaml",
		"models/configs/notes.json",
		"models/classifiers/noext",
		"models/classifiers/with.ext",
		"models/controlnet/canny.pth",
		`models/controlnet/back\slash.pth`,
		"models/t2i_adapter/depth.pt",
	)
	p, err := New(Options{BaseDir: base})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		folder string
		want   []string
	}{
		{"checkpoints", []string{".hidden.safetensors", "SDXL/base.SAFETENSORS", "SDXL/refiner.ckpt", "sd15.safetensors"}},
		{"diffusion_models", []string{"flux1-dev.sft", "flux1-schnell.safetensors"}},
		{"unet", []string{"flux1-dev.sft", "flux1-schnell.safetensors"}},
		{"text_encoders", []string{"clip_l.safetensors", "t5xxl.safetensors"}},
		{"clip", []string{"clip_l.safetensors", "t5xxl.safetensors"}},
		{"configs", []string{"v1-inference.yaml"}},
		{"classifiers", []string{"noext"}},
		{"controlnet", []string{"canny.pth", "depth.pt"}},
		{"loras", []string{}},
		{"diffusers", []string{}},
	}
	for _, tc := range cases {
		t.Run(tc.folder, func(t *testing.T) {
			got, err := p.List(tc.folder)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("List(%q) = %q, want %q", tc.folder, got, tc.want)
			}
		})
	}
	if _, err := p.List("nope"); !errors.Is(err, ErrUnknownFolder) {
		t.Fatalf("List(nope) err = %v, want ErrUnknownFolder", err)
	}
}

func TestListRefreshesOnChange(t *testing.T) {
	base := t.TempDir()
	touch(t, base, "models/loras/a.safetensors", "models/loras/sub/b.safetensors")
	p, err := New(Options{BaseDir: base})
	if err != nil {
		t.Fatal(err)
	}
	list := func() []string {
		t.Helper()
		got, err := p.List("loras")
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := list(); !slices.Equal(got, []string{"a.safetensors", "sub/b.safetensors"}) {
		t.Fatalf("first list = %q", got)
	}
	// Some file systems keep coarse directory times; push them forward explicitly so the
	// change is seen regardless of timestamp granularity.
	bump := func(dir string) {
		future := time.Now().Add(time.Hour)
		if err := os.Chtimes(filepath.Join(base, dir), future, future); err != nil {
			t.Fatal(err)
		}
	}
	touch(t, base, "models/loras/sub/deeper/c.safetensors")
	bump("models/loras/sub")
	if got := list(); !slices.Equal(got, []string{"a.safetensors", "sub/b.safetensors", "sub/deeper/c.safetensors"}) {
		t.Fatalf("after adding in a subfolder = %q", got)
	}
	if err := os.Remove(filepath.Join(base, "models/loras/a.safetensors")); err != nil {
		t.Fatal(err)
	}
	bump("models/loras")
	if got := list(); !slices.Equal(got, []string{"sub/b.safetensors", "sub/deeper/c.safetensors"}) {
		t.Fatalf("after removing = %q", got)
	}
	// A directory of the folder that did not exist at the last scan appears.
	if got, _ := p.List("vae"); len(got) != 0 {
		t.Fatalf("vae = %q", got)
	}
	touch(t, base, "models/vae/ae.safetensors")
	if got, _ := p.List("vae"); !slices.Equal(got, []string{"ae.safetensors"}) {
		t.Fatalf("vae after creating the directory = %q", got)
	}
	// The cache is really used: an unchanged tree gives the same slice contents and a
	// caller's edits to the returned slice do not leak into the cache.
	a := list()
	a[0] = "mutated"
	if b := list(); b[0] == "mutated" {
		t.Fatal("List returned the cached slice itself")
	}
}

func TestResolve(t *testing.T) {
	base := t.TempDir()
	outside := t.TempDir()
	touch(t, base, "models/checkpoints/sd15.safetensors", "models/checkpoints/sub/x.safetensors",
		"models/unet/u.safetensors", "models/diffusion_models/u.safetensors", "models/diffusion_models/d.gguf")
	touch(t, outside, "secret.safetensors", "dir/inner.safetensors")
	ck := filepath.Join(base, "models/checkpoints")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Symlink(filepath.Join(outside, "secret.safetensors"), filepath.Join(ck, "escape.safetensors")))
	must(os.Symlink(filepath.Join(outside, "dir"), filepath.Join(ck, "linkdir")))
	must(os.Symlink("sd15.safetensors", filepath.Join(ck, "alias.safetensors")))
	must(os.Symlink("sub", filepath.Join(ck, "sublink")))

	p, err := New(Options{BaseDir: base, ConfineLinks: true})
	must(err)
	cases := []struct {
		folder, name string
		want         string // relative to base
		err          error
	}{
		{"checkpoints", "sd15.safetensors", "models/checkpoints/sd15.safetensors", nil},
		{"checkpoints", "sub/x.safetensors", "models/checkpoints/sub/x.safetensors", nil},
		{"checkpoints", "alias.safetensors", "models/checkpoints/alias.safetensors", nil},
		{"checkpoints", "sublink/x.safetensors", "models/checkpoints/sublink/x.safetensors", nil},
		{"unet", "u.safetensors", "models/unet/u.safetensors", nil}, // models/unet is searched first
		{"diffusion_models", "d.gguf", "models/diffusion_models/d.gguf", nil},
		{"checkpoints", "missing.safetensors", "", ErrNotFound},
		{"checkpoints", "sub", "", ErrNotFound}, // a directory is not a model
		{"checkpoints", "../loras/x.safetensors", "", ErrInvalidName},
		{"checkpoints", "sub/../../x", "", ErrInvalidName},
		{"checkpoints", "/etc/passwd", "", ErrInvalidName},
		{"checkpoints", "", "", ErrInvalidName},
		{"checkpoints", "./sd15.safetensors", "", ErrInvalidName},
		{"checkpoints", "sub//x.safetensors", "", ErrInvalidName},
		{"checkpoints", "a\x00b", "", ErrInvalidName},
		{"checkpoints", `sub\x.safetensors`, "", ErrInvalidName},
		{"checkpoints", "escape.safetensors", "", ErrEscapes},
		{"checkpoints", "linkdir/inner.safetensors", "", ErrEscapes},
		{"nope", "x.safetensors", "", ErrUnknownFolder},
	}
	for _, tc := range cases {
		t.Run(tc.folder+"/"+tc.name, func(t *testing.T) {
			got, err := p.Resolve(tc.folder, tc.name)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("Resolve(%q, %q) = %q, %v; want error %v", tc.folder, tc.name, got, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := filepath.Join(base, tc.want); got != want {
				t.Fatalf("Resolve = %q, want %q", got, want)
			}
		})
	}

	// Confined, links that escape are not listed either; links that stay inside are.
	got, err := p.List("checkpoints")
	must(err)
	want := []string{"alias.safetensors", "sd15.safetensors", "sub/x.safetensors", "sublink/x.safetensors"}
	if !slices.Equal(got, want) {
		t.Fatalf("List = %q, want %q", got, want)
	}

	// By default, as in ComfyUI, the user's links to another drive are followed: the
	// file behind the link is listed and resolved under the link's name.
	p2, err := New(Options{BaseDir: base})
	must(err)
	for name, target := range map[string]string{"escape.safetensors": "secret.safetensors", "linkdir/inner.safetensors": "dir/inner.safetensors"} {
		got, err := p2.Resolve("checkpoints", name)
		if err != nil {
			t.Fatalf("default Resolve(%q): %v", name, err)
		}
		if want := filepath.Join(ck, filepath.FromSlash(name)); got != want {
			t.Fatalf("default Resolve(%q) = %q, want the link's path %q", name, got, want)
		}
		if real, err := filepath.EvalSymlinks(got); err != nil || real != filepath.Join(outside, filepath.FromSlash(target)) {
			t.Fatalf("%q leads to %q (%v), want the file on the other drive", name, real, err)
		}
	}
	got, err = p2.List("checkpoints")
	must(err)
	want = []string{"alias.safetensors", "escape.safetensors", "linkdir/inner.safetensors", "sd15.safetensors", "sub/x.safetensors", "sublink/x.safetensors"}
	if !slices.Equal(got, want) {
		t.Fatalf("default List = %q, want %q", got, want)
	}
}

func TestListSurvivesLinkCycle(t *testing.T) {
	base := t.TempDir()
	touch(t, base, "models/loras/a/x.safetensors")
	if err := os.Symlink("..", filepath.Join(base, "models/loras/a/up")); err != nil {
		t.Fatal(err)
	}
	p, err := New(Options{BaseDir: base})
	if err != nil {
		t.Fatal(err)
	}
	got, err := p.List("loras")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []string{"a/x.safetensors"}) {
		t.Fatalf("List = %q", got)
	}
}

func TestCheckName(t *testing.T) {
	for _, ok := range []string{"a.safetensors", "sub/a.safetensors", "a..b.safetensors", "..a", "sub/...x"} {
		if err := CheckName(ok); err != nil {
			t.Errorf("CheckName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "..", "../a", "a/..", "a/../b", "/a", "a/", "a//b", "./a", "a/./b"} {
		err := CheckName(bad)
		if !errors.Is(err, ErrInvalidName) {
			t.Errorf("CheckName(%q) = %v, want ErrInvalidName", bad, err)
		} else if !strings.Contains(err.Error(), "invalid model name") {
			t.Errorf("CheckName(%q) message %q", bad, err)
		}
	}
}

func TestConcurrentUse(t *testing.T) {
	base := t.TempDir()
	touch(t, base, "models/loras/a.safetensors")
	p, err := New(Options{BaseDir: base})
	if err != nil {
		t.Fatal(err)
	}
	extra := t.TempDir()
	touch(t, extra, "b.safetensors")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 50 {
			p.AddDir("loras", extra, false)
			p.AddDir("new_folder", extra, false)
		}
	}()
	for range 50 {
		if _, err := p.List("loras"); err != nil {
			t.Error(err)
		}
		if _, err := p.Resolve("loras", "a.safetensors"); err != nil {
			t.Error(err)
		}
		_ = p.Folders()
	}
	<-done
	got, _ := p.List("loras")
	if !slices.Equal(got, []string{"a.safetensors", "b.safetensors"}) {
		t.Fatalf("List = %q", got)
	}
}

// ModelsDir (--models-directory) replaces BaseDir/models for every model folder, its
// aliases too; custom_nodes stays under the base directory.
func TestModelsDir(t *testing.T) {
	base, models := t.TempDir(), t.TempDir()
	p, err := New(Options{BaseDir: base, ModelsDir: models})
	if err != nil {
		t.Fatal(err)
	}
	if p.ModelsDir() != models || p.BaseDir() != base {
		t.Fatalf("ModelsDir %q BaseDir %q", p.ModelsDir(), p.BaseDir())
	}
	for folder, want := range map[string][]string{
		"checkpoints":      {filepath.Join(models, "checkpoints")},
		"diffusion_models": {filepath.Join(models, "unet"), filepath.Join(models, "diffusion_models")},
		"custom_nodes":     {filepath.Join(base, "custom_nodes")},
	} {
		got, err := p.Dirs(folder)
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("%s: %q, %v; want %q", folder, got, err, want)
		}
	}
	def, err := New(Options{BaseDir: base})
	if err != nil || def.ModelsDir() != filepath.Join(base, "models") {
		t.Fatalf("default ModelsDir %q, %v", def.ModelsDir(), err)
	}
}
