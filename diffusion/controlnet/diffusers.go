package controlnet

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Diffusers-layout ControlNets (ControlNetModel) hold the same network as the cldm
// layout under other names; comfy/controlnet.py load_controlnet_state_dict renames
// them with comfy/utils.py unet_to_diffusers. The map below is derived from the keys
// present (levels, blocks per level), not from a table of known configurations, so
// any size converts.

// resnetNames maps a diffusers ResnetBlock2D parameter to the LDM ResBlock's.
var resnetNames = [][2]string{
	{"norm1.", "in_layers.0."},
	{"conv1.", "in_layers.2."},
	{"time_emb_proj.", "emb_layers.1."},
	{"norm2.", "out_layers.0."},
	{"conv2.", "out_layers.3."},
	{"conv_shortcut.", "skip_connection."},
}

// diffusersToLDM returns the cldm-layout name of every diffusers ControlNet key (keys
// it does not know map to themselves, with union's packed attention renamed
// .attn.in_proj_ → .attn.in_proj.), or an error for a layout it cannot place.
func diffusersToLDM(keys []string) (map[string]string, error) {
	perLevel := 0
	for _, k := range keys {
		if rest, ok := strings.CutPrefix(k, "down_blocks.0.resnets."); ok {
			j, _, _ := strings.Cut(rest, ".")
			if n, err := strconv.Atoi(j); err == nil {
				perLevel = max(perLevel, n+1)
			}
		}
	}
	if perLevel == 0 {
		return nil, fmt.Errorf("controlnet: diffusers ControlNet without down_blocks.0.resnets")
	}
	out := map[string]string{}
	for _, k := range keys {
		v, err := diffusersKey(k, perLevel)
		if err != nil {
			return nil, err
		}
		out[k] = v
	}
	return out, nil
}

func diffusersKey(k string, perLevel int) (string, error) {
	simple := []struct {
		from, to string
		resnet   bool
	}{
		{"conv_in.", "input_blocks.0.0.", false},
		{"time_embedding.linear_1.", "time_embed.0.", false},
		{"time_embedding.linear_2.", "time_embed.2.", false},
		{"add_embedding.linear_1.", "label_emb.0.0.", false},
		{"add_embedding.linear_2.", "label_emb.0.2.", false},
		{"class_embedding.linear_1.", "label_emb.0.0.", false},
		{"class_embedding.linear_2.", "label_emb.0.2.", false},
		{"controlnet_mid_block.", "middle_block_out.0.", false},
		{"controlnet_cond_embedding.conv_in.", "input_hint_block.0.", false},
		{"controlnet_cond_embedding.conv_out.", "input_hint_block.14.", false},
		{"mid_block.resnets.0.", "middle_block.0.", true},
		{"mid_block.attentions.0.", "middle_block.1.", false},
		{"mid_block.resnets.1.", "middle_block.2.", true},
	}
	for _, s := range simple {
		if rest, ok := strings.CutPrefix(k, s.from); ok {
			if s.resnet {
				rest = resnetRename(rest)
			}
			return s.to + rest, nil
		}
	}
	idx := func(rest string) (int, string, error) {
		a, tail, ok := strings.Cut(rest, ".")
		n, err := strconv.Atoi(a)
		if !ok || err != nil {
			return 0, "", fmt.Errorf("controlnet: diffusers key %q: no block index", k)
		}
		return n, tail, nil
	}
	if rest, ok := strings.CutPrefix(k, "controlnet_cond_embedding.blocks."); ok {
		i, tail, err := idx(rest)
		if err != nil {
			return "", err
		}
		return "input_hint_block." + strconv.Itoa(2*(i+1)) + "." + tail, nil
	}
	if rest, ok := strings.CutPrefix(k, "controlnet_down_blocks."); ok {
		i, tail, err := idx(rest)
		if err != nil {
			return "", err
		}
		return "zero_convs." + strconv.Itoa(i) + ".0." + tail, nil
	}
	if rest, ok := strings.CutPrefix(k, "down_blocks."); ok {
		level, tail, err := idx(rest)
		if err != nil {
			return "", err
		}
		for _, part := range []struct {
			name, mod string
		}{{"resnets.", "0."}, {"attentions.", "1."}} {
			if r, ok := strings.CutPrefix(tail, part.name); ok {
				j, t2, err := idx(r)
				if err != nil {
					return "", err
				}
				if j >= perLevel {
					return "", fmt.Errorf("controlnet: diffusers key %q: block %d of a level of %d", k, j, perLevel)
				}
				if part.mod == "0." {
					t2 = resnetRename(t2)
				}
				return "input_blocks." + strconv.Itoa(1+level*(perLevel+1)+j) + "." + part.mod + t2, nil
			}
		}
		if r, ok := strings.CutPrefix(tail, "downsamplers.0.conv."); ok {
			return "input_blocks." + strconv.Itoa((level+1)*(perLevel+1)) + ".0.op." + r, nil
		}
		return "", fmt.Errorf("controlnet: diffusers key %q: unknown down block part", k)
	}
	return strings.Replace(k, ".attn.in_proj_", ".attn.in_proj.", 1), nil
}

// resnetRename renames a ResnetBlock2D parameter to the LDM ResBlock's.
func resnetRename(rest string) string {
	for _, r := range resnetNames {
		if t, ok := strings.CutPrefix(rest, r[0]); ok {
			return r[1] + t
		}
	}
	return rest
}

// sortedKeys returns a map's keys sorted (a deterministic alias order).
func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
