package folders

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestExtraConfig(t *testing.T) {
	base := t.TempDir()
	cfgDir := t.TempDir()
	a1111 := filepath.Join(cfgDir, "webui")
	shared := t.TempDir()
	t.Setenv("FF_TEST_SHARED", shared)
	touch(t, a1111, "models/Stable-diffusion/v1-5.safetensors", "models/Lora/l1.safetensors",
		"models/LyCORIS/loha.safetensors", "embeddings/bad.pt")
	touch(t, shared, "ckpt/shared.safetensors", "mine/anything.xyz")
	touch(t, base, "models/checkpoints/local.safetensors", "models/loras/local.safetensors")
	yml := `# A1111 install next to this file (relative base_path)
a111:
    base_path: webui/

    checkpoints: models/Stable-diffusion
    configs: models/Stable-diffusion
    vae: models/VAE
    loras: |
         models/Lora
         models/LyCORIS
    embeddings: embeddings

empty_section:

central:
    base_path: ${FF_TEST_SHARED}
    is_default: true
    checkpoints: ckpt
    unet: unet_dir
    my_folder: mine
no_base:
    clip: rel_clip
    vae: /abs/vae
`
	cfg := filepath.Join(cfgDir, "extra_model_paths.yaml")
	if err := os.WriteFile(cfg, []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := New(Options{BaseDir: base, ExtraConfigs: []string{cfg}})
	if err != nil {
		t.Fatal(err)
	}
	dirs := func(folder string) []string {
		t.Helper()
		d, err := p.Dirs(folder)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	// is_default puts the central checkpoints directory first.
	wantCk := []string{filepath.Join(shared, "ckpt"), filepath.Join(base, "models/checkpoints"),
		filepath.Join(a1111, "models/Stable-diffusion")}
	if got := dirs("checkpoints"); !slices.Equal(got, wantCk) {
		t.Fatalf("checkpoints dirs = %q\nwant %q", got, wantCk)
	}
	wantLoras := []string{filepath.Join(base, "models/loras"), filepath.Join(a1111, "models/Lora"), filepath.Join(a1111, "models/LyCORIS")}
	if got := dirs("loras"); !slices.Equal(got, wantLoras) {
		t.Fatalf("loras dirs = %q\nwant %q", got, wantLoras)
	}
	wantUnet := []string{filepath.Join(shared, "unet_dir"), filepath.Join(base, "models/unet"), filepath.Join(base, "models/diffusion_models")}
	if got := dirs("diffusion_models"); !slices.Equal(got, wantUnet) {
		t.Fatalf("diffusion_models dirs = %q\nwant %q", got, wantUnet)
	}
	if got := dirs("text_encoders"); got[len(got)-1] != filepath.Join(cfgDir, "rel_clip") {
		t.Fatalf("relative dir without base_path: %q", got)
	}
	if got := dirs("vae"); got[len(got)-1] != "/abs/vae" {
		t.Fatalf("absolute dir: %q", got)
	}
	if got := p.Folders(); got[len(got)-3] != "my_folder" {
		t.Fatalf("new folder not appended: %q", got)
	}

	ck, _ := p.List("checkpoints")
	if !slices.Equal(ck, []string{"local.safetensors", "shared.safetensors", "v1-5.safetensors"}) {
		t.Fatalf("checkpoints = %q", ck)
	}
	l, _ := p.List("loras")
	if !slices.Equal(l, []string{"l1.safetensors", "local.safetensors", "loha.safetensors"}) {
		t.Fatalf("loras = %q", l)
	}
	// A folder created by the config accepts any extension, as in ComfyUI.
	mine, _ := p.List("my_folder")
	if !slices.Equal(mine, []string{"anything.xyz"}) {
		t.Fatalf("my_folder = %q", mine)
	}
	path, err := p.Resolve("checkpoints", "v1-5.safetensors")
	if err != nil || path != filepath.Join(a1111, "models/Stable-diffusion/v1-5.safetensors") {
		t.Fatalf("Resolve = %q, %v", path, err)
	}
}

func TestExtraConfigErrors(t *testing.T) {
	cases := []struct {
		name, yaml, want string
	}{
		{"not a mapping", "- a\n- b\n", "not a mapping of sections"},
		{"section list", "a:\n  - x\n", `section "a" (line 2) is not a mapping`},
		{"list value", "a:\n  checkpoints:\n    - x\n", `section "a": checkpoints (line 3) is not a string`},
		{"bad is_default", "a:\n  is_default: maybe\n", "is_default"},
		{"bad yaml", "a: [\n", "yaml"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "x.yaml")
			if err := os.WriteFile(f, []byte(tc.yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := New(Options{BaseDir: t.TempDir(), ExtraConfigs: []string{f}})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), f) {
				t.Fatalf("err = %v, want it to contain %q and the file name", err, tc.want)
			}
		})
	}
	if _, err := New(Options{ExtraConfigs: []string{filepath.Join(t.TempDir(), "missing.yaml")}}); err == nil {
		t.Fatal("missing config file accepted")
	}
	// An empty file is fine.
	f := filepath.Join(t.TempDir(), "empty.yaml")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Options{BaseDir: t.TempDir(), ExtraConfigs: []string{f}}); err != nil {
		t.Fatal(err)
	}
}

func TestExpandPath(t *testing.T) {
	t.Setenv("FF_X", "/x")
	home, _ := os.UserHomeDir()
	cases := map[string]string{
		"$FF_X/a":         "/x/a",
		"${FF_X}/a":       "/x/a",
		"$FF_UNSET_1/a":   "$FF_UNSET_1/a",
		"${FF_UNSET_1}/a": "${FF_UNSET_1}/a",
		"a$":              "a$",
		"~/m":             home + "/m",
		"a~":              "a~",
	}
	for in, want := range cases {
		if got := expandPath(in); got != want {
			t.Errorf("expandPath(%q) = %q, want %q", in, got, want)
		}
	}
}
