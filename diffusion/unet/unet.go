package unet

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/forgeflow/forgeflow/diffusion/nn"
	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/gpu"
)

// Heads fixes how attention widths split into heads: SD1.x uses a fixed count (8),
// SD2.x and SDXL a fixed head width (64).
type Heads struct {
	Count int // number of heads, or 0
	Dim   int // channels per head, or 0
}

func (h Heads) split(width int) (heads, dim int) {
	if h.Dim > 0 {
		return width / h.Dim, h.Dim
	}
	return h.Count, width / h.Count
}

// Module is one entry of a TimestepEmbedSequential block: exactly one field is set.
type Module struct {
	Res         *ResBlock
	Transformer *SpatialTransformer
	// Down is a stride-2 3×3 conv (Downsample "op"); Up a nearest 2× upsample followed by
	// a 3×3 conv (Upsample "conv").
	Down *nn.Conv
	Up   *nn.Conv
	// In is the first input block's plain conv.
	In *nn.Conv
}

// Model is UNetModel.
type Model struct {
	// Module records the prefix the model was loaded from, the root of its layers' keys.
	nn.Module
	TimeEmbed1 nn.Linear `sd:"time_embed.0"`
	TimeEmbed2 nn.Linear `sd:"time_embed.2"`
	// LabelEmbed1/2 embed SDXL's ADM vector (label_emb.0.0 and .0.2); nil otherwise.
	LabelEmbed struct {
		L1 nn.Linear `sd:"0.0"`
		L2 nn.Linear `sd:"0.2"`
	} `sd:"label_emb,optional"`
	OutNorm nn.Norm `sd:"out.0"`
	OutConv nn.Conv `sd:"out.2"`

	Input  [][]Module
	Middle []Module
	Output [][]Module

	ModelChannels int
	Heads         Heads
}

// Load builds the model from the tensors under prefix ("model.diffusion_model." in a
// single-file checkpoint, "" in a split diffusion-model file).
func Load(rt *gpu.Runtime, src statedict.Source, prefix string, heads Heads) (*Model, error) {
	m := &Model{Heads: heads}
	if err := m.load(rt, src, prefix, m); err != nil {
		return nil, err
	}
	m.ModelChannels = m.TimeEmbed1.Weight.Dim(1)
	var err error
	if m.Output, err = loadBlocks(rt, src, src.Keys(), prefix+"output_blocks."); err != nil {
		return nil, err
	}
	if len(m.Output) == 0 {
		return nil, fmt.Errorf("unet: no output blocks under %q", prefix)
	}
	if len(m.Input) != len(m.Output) {
		return nil, fmt.Errorf("unet: %d input blocks but %d output blocks", len(m.Input), len(m.Output))
	}
	return m, nil
}

// LoadTrunk builds the embeddings, input blocks and middle block under prefix, without
// output blocks or output head: the copy of the UNet's first half a ControlNet holds
// (comfy/cldm/cldm.py). Such a model can Encode but not Forward.
func LoadTrunk(rt *gpu.Runtime, src statedict.Source, prefix string, heads Heads) (*Model, error) {
	m := &Model{Heads: heads}
	var head struct {
		TimeEmbed1 nn.Linear `sd:"time_embed.0"`
		TimeEmbed2 nn.Linear `sd:"time_embed.2"`
		LabelEmbed struct {
			L1 nn.Linear `sd:"0.0"`
			L2 nn.Linear `sd:"0.2"`
		} `sd:"label_emb,optional"`
	}
	if err := m.load(rt, src, prefix, &head); err != nil {
		return nil, err
	}
	m.BoundAt(prefix)
	m.TimeEmbed1, m.TimeEmbed2 = head.TimeEmbed1, head.TimeEmbed2
	m.LabelEmbed.L1, m.LabelEmbed.L2 = head.LabelEmbed.L1, head.LabelEmbed.L2
	m.ModelChannels = m.TimeEmbed1.Weight.Dim(1)
	return m, nil
}

// load binds the tagged fields of dst (the model or a part of it) and reads the input
// and middle blocks into m.
func (m *Model) load(rt *gpu.Runtime, src statedict.Source, prefix string, dst any) error {
	if m.Heads.Count <= 0 && m.Heads.Dim <= 0 {
		return fmt.Errorf("unet: no head configuration")
	}
	if _, err := statedict.Bind(rt, src, prefix, dst); err != nil {
		return fmt.Errorf("unet: %w", err)
	}
	keys := src.Keys()
	var err error
	if m.Input, err = loadBlocks(rt, src, keys, prefix+"input_blocks."); err != nil {
		return err
	}
	mid, err := loadBlocks(rt, src, keys, prefix+"middle_block")
	if err != nil {
		return err
	}
	if len(mid) == 1 {
		m.Middle = mid[0]
	}
	if len(m.Input) == 0 || len(m.Middle) == 0 {
		return fmt.Errorf("unet: %d input and %d middle blocks under %q", len(m.Input), len(m.Middle), prefix)
	}
	return nil
}

// loadBlocks reads base+"N.M…" (or base+".M…" for the middle block) as a list of
// sequential blocks, each module's type told by its keys.
func loadBlocks(rt *gpu.Runtime, src statedict.Source, keys []string, base string) ([][]Module, error) {
	type pos struct{ block, mod int }
	found := map[pos]map[string]bool{}
	middle := !strings.HasSuffix(base, ".")
	for _, k := range keys {
		rest, ok := strings.CutPrefix(k, base)
		if !ok {
			continue
		}
		var parts []string
		if middle {
			rest, ok = strings.CutPrefix(rest, ".")
			if !ok {
				continue
			}
			parts = append([]string{"0"}, strings.SplitN(rest, ".", 2)...)
		} else {
			parts = strings.SplitN(rest, ".", 3)
		}
		if len(parts) < 3 {
			continue
		}
		b, err1 := strconv.Atoi(parts[0])
		md, err2 := strconv.Atoi(parts[1])
		if err1 != nil || err2 != nil {
			continue
		}
		p := pos{b, md}
		if found[p] == nil {
			found[p] = map[string]bool{}
		}
		found[p][parts[2]] = true
	}
	nb := 0
	for p := range found {
		nb = max(nb, p.block+1)
	}
	blocks := make([][]Module, nb)
	var ps []pos
	for p := range found {
		ps = append(ps, p)
	}
	sort.Slice(ps, func(i, j int) bool {
		if ps[i].block != ps[j].block {
			return ps[i].block < ps[j].block
		}
		return ps[i].mod < ps[j].mod
	})
	for _, p := range ps {
		sub := found[p]
		var prefix string
		if middle {
			prefix = base + "." + strconv.Itoa(p.mod) + "."
		} else {
			prefix = base + strconv.Itoa(p.block) + "." + strconv.Itoa(p.mod) + "."
		}
		var mod Module
		var dst any
		switch {
		case sub["in_layers.0.weight"]:
			mod.Res = &ResBlock{}
			dst = mod.Res
		case sub["norm.weight"] && anyPrefix(sub, "transformer_blocks."):
			mod.Transformer = &SpatialTransformer{}
			dst = mod.Transformer
		case sub["op.weight"]:
			mod.Down = &nn.Conv{}
		case sub["conv.weight"]:
			mod.Up = &nn.Conv{}
		case sub["weight"] && sub["bias"]:
			mod.In = &nn.Conv{}
			dst = mod.In
		default:
			return nil, fmt.Errorf("unet: %s: unrecognised module", strings.TrimSuffix(prefix, "."))
		}
		var err error
		switch {
		case mod.Down != nil:
			err = bindConv(rt, src, prefix+"op.", mod.Down)
		case mod.Up != nil:
			err = bindConv(rt, src, prefix+"conv.", mod.Up)
		default:
			_, err = statedict.Bind(rt, src, prefix, dst)
		}
		if err != nil {
			return nil, fmt.Errorf("unet: %w", err)
		}
		blocks[p.block] = append(blocks[p.block], mod)
	}
	for i, b := range blocks {
		if len(b) == 0 {
			return nil, fmt.Errorf("unet: block %s%d is empty", base, i)
		}
	}
	return blocks, nil
}

func bindConv(rt *gpu.Runtime, src statedict.Source, prefix string, c *nn.Conv) error {
	_, err := statedict.Bind(rt, src, prefix, c)
	return err
}

func anyPrefix(set map[string]bool, p string) bool {
	for k := range set {
		if strings.HasPrefix(k, p) {
			return true
		}
	}
	return false
}
