package folders_test

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/forgeflow/forgeflow/weights/folders"
)

func Example() {
	base, _ := os.MkdirTemp("", "forgeflow-example")
	defer os.RemoveAll(base)
	for _, f := range []string{"models/checkpoints/sd15.safetensors", "models/checkpoints/SDXL/base.safetensors", "models/checkpoints/notes.txt"} {
		p := filepath.Join(base, f)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, nil, 0o644)
	}
	paths, err := folders.New(folders.Options{BaseDir: base})
	if err != nil {
		fmt.Println(err)
		return
	}
	names, _ := paths.List("checkpoints")
	fmt.Println(names)
	full, _ := paths.Resolve("checkpoints", "SDXL/base.safetensors")
	rel, _ := filepath.Rel(base, full)
	fmt.Println(rel)
	_, err = paths.Resolve("checkpoints", "../../etc/passwd")
	fmt.Println(err)
	// Output:
	// [SDXL/base.safetensors sd15.safetensors]
	// models/checkpoints/SDXL/base.safetensors
	// folders: checkpoints: invalid model name: "../../etc/passwd" climbs out of its folder
}
