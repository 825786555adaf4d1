package sd

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/forgeflow/forgeflow/diffusion/lora"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

// CLIPFile is one file CLIPSave writes: the encoder's ComfyUI name ("clip_l", "clip_g",
// "t5xxl") and the function that writes it.
type CLIPFile struct {
	Name  string
	Write func(w io.Writer, meta map[string]string) error
}

// CLIPFiles lists the files CLIPSave writes for c, one per text encoder in ComfyUI's
// order (clip_l, clip_g, clip_h, t5xxl): each holds the encoder's parameters as they
// run (LoRAs and merges included) under ComfyUI's state-dict names with the encoder's
// prefix and "transformer." removed ("text_model.encoder.layers.0.…",
// "text_projection.weight"; T5's "encoder.block.0.…", "shared.weight"): the
// transformers layout every CLIP loader reads. Tensors keep their dtype in memory (F32,
// F16 or BF16); an F8 or quantized encoder cannot be written.
func (c *CLIP) CLIPFiles() ([]CLIPFile, error) {
	var out []CLIPFile
	for _, name := range []string{"l", "g", "h"} {
		for _, te := range c.Encoders {
			if te.Name != name {
				continue
			}
			ts, err := effectiveTensors(c.Runtime, te.loraNet(lora.Auto))
			if err != nil {
				return nil, fmt.Errorf("sd: CLIP-%s: %w", name, err)
			}
			if p := te.Encoder.Projection; p != nil {
				ts["clip_"+name+".transformer.text_projection.weight"] = p
			}
			out = append(out, clipFile("clip_"+name, ts))
		}
	}
	if c.T5 != nil {
		ts, err := effectiveTensors(c.Runtime, c.T5.loraNet(lora.Auto))
		if err != nil {
			return nil, fmt.Errorf("sd: T5: %w", err)
		}
		out = append(out, clipFile("t5xxl", ts))
	}
	return out, nil
}

// effectiveTensors returns a network's parameters with every LoRA merged, by ComfyUI key.
func effectiveTensors[T any](rt *gpu.Runtime, n *lora.Network[T]) (map[string]*gpu.Tensor, error) {
	eff, err := n.Effective(rt)
	if err != nil {
		return nil, err
	}
	return eff.Tensors()
}

// clipFile writes the tensors of one encoder, prefix name + "." and then "transformer."
// removed from their keys, as comfy.utils.state_dict_prefix_replace does.
func clipFile(name string, ts map[string]*gpu.Tensor) CLIPFile {
	return CLIPFile{Name: name, Write: func(w io.Writer, meta map[string]string) error {
		keys := make([]string, 0, len(ts))
		for k := range ts {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var entries []safetensors.Entry
		for _, k := range keys {
			short := strings.TrimPrefix(k, name+".")
			short = strings.TrimPrefix(short, "transformer.")
			e, err := memEntry(short, ts[k], "")
			if err != nil {
				return fmt.Errorf("sd: save %s: %w", name, err)
			}
			entries = append(entries, e)
		}
		safetensors.SortEntries(entries)
		if err := safetensors.Write(w, entries, meta); err != nil {
			return fmt.Errorf("sd: save %s: %w", name, err)
		}
		return nil
	}}
}
