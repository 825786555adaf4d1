package gligen

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/diffusion/unet"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// File is a GLIGEN model loaded from a file it aliases; Close unmaps it.
type File struct {
	*Model
	file *tensorfile.File
}

// Close releases the mapping.
func (f *File) Close() error { return f.file.Close() }

// Bytes is the size of the file's tensors.
func (f *File) Bytes() int64 {
	var n int64
	for _, in := range f.file.Tensors() {
		n += in.Size
	}
	return n
}

// LoadFile loads a GLIGEN file (safetensors or a PyTorch pickle) as load_gligen does.
func LoadFile(rt *gpu.Runtime, path string) (*File, error) {
	f, err := tensorfile.Open(path, tensorfile.Safetensors, tensorfile.Torch)
	if err != nil {
		return nil, fmt.Errorf("gligen: %w", err)
	}
	m, err := Load(rt, statedict.NewFileSource(rt, f))
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	return &File{Model: m, file: f}, nil
}

// fuserKey finds the UNet block of a fuser prefix: "…input_blocks.4.1.transformer_blocks.0.fuser."
// or a fuser right under the block ("input_blocks.4.fuser."), which load_gligen's
// substring match accepts too.
var fuserKey = regexp.MustCompile(`(input_blocks|middle_block|output_blocks)\.(\d+)\.(?:.+\.)?fuser\.$`)

// partNames maps the state-dict names of the UNet's parts to them.
var partNames = map[string]unet.Part{"input_blocks": unet.PartInput, "middle_block": unet.PartMiddle, "output_blocks": unet.PartOutput}

// maxBlock is the block numbers load_gligen looks at (range(20)).
const maxBlock = 20

// partOrder ranks the UNet parts in the order a forward pass runs them.
var partOrder = map[unet.Part]int{unet.PartInput: 0, unet.PartMiddle: 1, unet.PartOutput: 2}

// Load binds a GLIGEN model from src: a fuser under every "….fuser." prefix of an
// input, middle or output block (numbers below 20, as load_gligen scans), ordered as
// the UNet runs its spatial transformers, and the position net under "position_net.".
func Load(rt *gpu.Runtime, src *statedict.FileSource) (*Model, error) {
	prefixes := map[string]unet.Block{}
	for _, k := range src.Keys() {
		i := strings.Index(k, ".fuser.")
		if i < 0 {
			continue
		}
		p := k[:i+len(".fuser.")]
		if _, ok := prefixes[p]; ok {
			continue
		}
		g := fuserKey.FindStringSubmatch(p)
		if g == nil {
			return nil, fmt.Errorf("gligen: fuser %q lies in no input, middle or output block", p)
		}
		n, err := strconv.Atoi(g[2])
		if err != nil || n >= maxBlock {
			continue
		}
		prefixes[p] = unet.Block{Part: partNames[g[1]], Number: n}
	}
	if len(prefixes) == 0 {
		return nil, errors.New("gligen: no fuser tensors (….fuser.*): not a GLIGEN model")
	}
	if !src.Has("position_net.null_positive_feature") {
		return nil, errors.New("gligen: no position_net.null_positive_feature: not a GLIGEN text-box model")
	}
	m := &Model{}
	seen := map[unet.Block]string{}
	for p, blk := range prefixes {
		if q, ok := seen[blk]; ok {
			return nil, fmt.Errorf("gligen: fusers %q and %q share %s block %d (ComfyUI's loader takes one fuser per block)", q, p, blk.Part, blk.Number)
		}
		seen[blk] = p
		f := &Fuser{Block: blk}
		if _, err := statedict.Bind(rt, src, p, f); err != nil {
			return nil, fmt.Errorf("gligen: fuser %s: %w", p, err)
		}
		if err := f.init(); err != nil {
			return nil, fmt.Errorf("gligen: fuser %s: %w", p, err)
		}
		m.Fusers = append(m.Fusers, f)
	}
	sort.Slice(m.Fusers, func(i, j int) bool {
		a, b := m.Fusers[i].Block, m.Fusers[j].Block
		if a.Part != b.Part {
			return partOrder[a.Part] < partOrder[b.Part]
		}
		return a.Number < b.Number
	})
	// Gligen's key_dim is the last fuser's text width (the padding's width).
	m.KeyDim = m.Fusers[len(m.Fusers)-1].Linear.Weight.Dim(1)
	if _, err := statedict.Bind(rt, src, "position_net.", &m.Position); err != nil {
		return nil, fmt.Errorf("gligen: position net: %w", err)
	}
	return m, m.checkPosition()
}

// init checks the fuser's shapes and fixes its heads and gates.
func (f *Fuser) init() error {
	w := f.Linear.Weight
	if w.Rank() != 2 || w.Dim(0) == 0 {
		return fmt.Errorf("linear.weight %v is not (query, key)", w.Shape())
	}
	query, key := w.Dim(0), w.Dim(1)
	if key == 768 {
		f.Heads, f.DimHead = 8, query/8
	} else {
		f.Heads, f.DimHead = query/64, 64
	}
	if f.Heads == 0 || f.Heads*f.DimHead != query {
		return fmt.Errorf("%d-wide tokens do not split into the heads load_gligen uses (%d × %d)", query, f.Heads, f.DimHead)
	}
	for _, l := range []struct {
		name string
		w    *gpu.Tensor
		out  int
		in   int
	}{
		{"attn.to_q", f.Attn.Q.Weight, query, query},
		{"attn.to_k", f.Attn.K.Weight, query, query},
		{"attn.to_v", f.Attn.V.Weight, query, query},
		{"attn.to_out.0", f.Attn.Out.Weight, query, query},
		{"ff.net.0.proj", f.FF.Proj.Weight, 8 * query, query},
		{"ff.net.2", f.FF.Out.Weight, query, 4 * query},
	} {
		if l.w.Rank() != 2 || l.w.Dim(0) != l.out || l.w.Dim(1) != l.in {
			return fmt.Errorf("%s.weight %v, want [%d %d]", l.name, l.w.Shape(), l.out, l.in)
		}
	}
	for _, g := range []struct {
		t   *gpu.Tensor
		dst *float32
	}{{f.AlphaAttn, &f.gateAttn}, {f.AlphaDense, &f.gateDense}} {
		v, err := g.t.Float32()
		if err != nil {
			return err
		}
		if len(v) != 1 {
			return fmt.Errorf("a gate holds %d values, want 1", len(v))
		}
		*g.dst = float32(math.Tanh(float64(v[0])))
	}
	return nil
}

// checkPosition checks the position net against the fusers and reads its null features.
func (m *Model) checkPosition() error {
	p := &m.Position
	np, err := p.NullPositive.Float32()
	if err != nil {
		return err
	}
	nq, err := p.NullPosition.Float32()
	if err != nil {
		return err
	}
	if p.NullPositive.Rank() != 1 || len(nq) != positionDim {
		return fmt.Errorf("gligen: null features %v and %v, want [in] and [%d]", p.NullPositive.Shape(), p.NullPosition.Shape(), positionDim)
	}
	in := len(np)
	for _, l := range []struct {
		name    string
		w       *gpu.Tensor
		out, in int
	}{
		{"linears.0", p.L0.Weight, 512, in + positionDim},
		{"linears.2", p.L1.Weight, 512, 512},
		{"linears.4", p.L2.Weight, m.KeyDim, 512},
	} {
		if l.w.Rank() != 2 || l.w.Dim(0) != l.out || l.w.Dim(1) != l.in {
			return fmt.Errorf("gligen: position_net.%s.weight %v, want [%d %d]", l.name, l.w.Shape(), l.out, l.in)
		}
	}
	for _, f := range m.Fusers {
		if f.Linear.Weight.Dim(1) != m.KeyDim {
			return fmt.Errorf("gligen: the fuser of %s block %d takes %d-wide grounding tokens, the position net makes %d", f.Block.Part, f.Block.Number, f.Linear.Weight.Dim(1), m.KeyDim)
		}
	}
	m.nullPositive, m.nullPosition = np, nq
	return nil
}
