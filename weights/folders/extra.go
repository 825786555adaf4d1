package folders

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"go.yaml.in/yaml/v3"
)

// LoadExtraConfig adds the directories listed in an extra_model_paths.yaml file, in the
// format of ComfyUI's utils/extra_config.py (load_extra_path_config):
//
//	a111:                       # any section name; sections are read in file order
//	    base_path: path/to/stable-diffusion-webui/
//	    is_default: false       # optional: put these directories first
//	    checkpoints: models/Stable-diffusion
//	    loras: |                # several directories, one per line
//	        models/Lora
//	        models/LyCORIS
//
// base_path has ~ and $VARS expanded and, when relative, is taken relative to the
// YAML file's directory. Each listed directory is joined to base_path; without a
// base_path a relative directory is taken relative to the YAML file's directory. Folder
// names go through Canonical ("unet", "clip"); an unknown folder name creates a folder
// that accepts any file, as in ComfyUI. An empty section is skipped.
func (p *Paths) LoadExtraConfig(file string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("folders: extra model paths: %w", err)
	}
	abs, err := filepath.Abs(file)
	if err != nil {
		return fmt.Errorf("folders: extra model paths: %w", err)
	}
	entries, err := parseExtraConfig(data, filepath.Dir(abs))
	if err != nil {
		return fmt.Errorf("folders: extra model paths %s: %w", file, err)
	}
	for _, e := range entries {
		p.log.Debug("adding extra model path", "folder", e.folder, "dir", e.dir, "default", e.isDefault)
		p.AddDir(e.folder, e.dir, e.isDefault)
	}
	return nil
}

type extraEntry struct {
	folder    string
	dir       string
	isDefault bool
}

// parseExtraConfig turns the YAML document into directory entries in file order.
func parseExtraConfig(data []byte, yamlDir string) ([]extraEntry, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	if len(doc.Content) == 0 {
		return nil, nil // empty file
	}
	top := doc.Content[0]
	if top.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("top level is not a mapping of sections")
	}
	var out []extraEntry
	for i := 0; i+1 < len(top.Content); i += 2 {
		section, conf := top.Content[i].Value, top.Content[i+1]
		if conf.Kind == yaml.ScalarNode && conf.Tag == "!!null" {
			continue
		}
		if conf.Kind != yaml.MappingNode {
			return nil, fmt.Errorf("section %q (line %d) is not a mapping", section, conf.Line)
		}
		entries, err := parseSection(section, conf, yamlDir)
		if err != nil {
			return nil, err
		}
		out = append(out, entries...)
	}
	return out, nil
}

func parseSection(section string, conf *yaml.Node, yamlDir string) ([]extraEntry, error) {
	base := ""
	isDefault := false
	type kv struct {
		key string
		val *yaml.Node
	}
	var folders []kv
	for j := 0; j+1 < len(conf.Content); j += 2 {
		key, val := conf.Content[j].Value, conf.Content[j+1]
		switch key {
		case "base_path":
			if val.Kind != yaml.ScalarNode {
				return nil, fmt.Errorf("section %q: base_path (line %d) is not a string", section, val.Line)
			}
			base = expandPath(val.Value)
			if !filepath.IsAbs(base) {
				base = filepath.Join(yamlDir, base)
			}
		case "is_default":
			if err := val.Decode(&isDefault); err != nil {
				return nil, fmt.Errorf("section %q: is_default (line %d): %w", section, val.Line, err)
			}
		default:
			if val.Kind != yaml.ScalarNode || val.Tag == "!!null" {
				return nil, fmt.Errorf("section %q: %s (line %d) is not a string of directories", section, key, val.Line)
			}
			folders = append(folders, kv{key, val})
		}
	}
	var out []extraEntry
	for _, f := range folders {
		for _, line := range strings.Split(f.val.Value, "\n") {
			// ComfyUI keeps surrounding blanks; a path never usefully ends in one.
			line = strings.TrimSpace(line)
			if line == "" {
				continue
			}
			dir := line
			switch {
			case filepath.IsAbs(line):
				// os.path.join(base, "/abs") is "/abs" in Python as well.
			case base != "":
				dir = filepath.Join(base, line)
			default:
				dir = filepath.Join(yamlDir, line)
			}
			out = append(out, extraEntry{folder: f.key, dir: filepath.Clean(dir), isDefault: isDefault})
		}
	}
	return out, nil
}

// expandPath does Python's os.path.expanduser then os.path.expandvars: a leading "~"
// becomes the home directory; $NAME and ${NAME} are replaced when NAME is set and kept
// as written otherwise.
func expandPath(s string) string {
	if s == "~" || strings.HasPrefix(s, "~/") {
		if home, err := os.UserHomeDir(); err == nil {
			s = home + s[1:]
		}
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' {
			b.WriteByte(s[i])
			continue
		}
		name, width, braced := varAt(s[i+1:])
		if name == "" {
			b.WriteByte('$')
			continue
		}
		if v, ok := os.LookupEnv(name); ok {
			b.WriteString(v)
		} else if braced {
			b.WriteString("${" + name + "}")
		} else {
			b.WriteString("$" + name)
		}
		i += width
	}
	return b.String()
}

// varAt reads a variable name after a '$': "{NAME}" or a run of letters, digits and
// underscores. width is how many bytes it used.
func varAt(s string) (name string, width int, braced bool) {
	if strings.HasPrefix(s, "{") {
		end := strings.IndexByte(s, '}')
		if end <= 1 {
			return "", 0, false
		}
		return s[1:end], end + 1, true
	}
	n := 0
	for n < len(s) && (s[n] == '_' || s[n] >= 'a' && s[n] <= 'z' || s[n] >= 'A' && s[n] <= 'Z' || s[n] >= '0' && s[n] <= '9') {
		n++
	}
	return s[:n], n, false
}
