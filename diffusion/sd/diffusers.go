package sd

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/forgeflow/forgeflow/diffusion/statedict"
	"github.com/forgeflow/forgeflow/gpu"
	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/detect"
	"github.com/forgeflow/forgeflow/weights/tensorfile"
)

// Diffusers folders (DiffusersLoader, comfy/diffusers_load.py load_diffusers): a
// pipeline folder holds unet/, vae/, text_encoder/ and, for SDXL, text_encoder_2/, each
// a model file in diffusers' names. The VAE and the text encoders load as VAELoader and
// CLIPLoader load such files (vae_diffusers.go; transformers-layout CLIP). The UNet's
// keys are served under the original names by aliases (no copy), the mapping
// re-derived from comfy/utils.py unet_to_diffusers, driven by the keys present:
//
//	conv_in, time_embedding.linear_{1,2}       → input_blocks.0.0, time_embed.{0,2}
//	add_embedding / class_embedding.linear_{1,2} → label_emb.0.{0,2}
//	down_blocks.i.resnets.j                    → input_blocks.(1+(R+1)·i+j).0
//	down_blocks.i.attentions.j                 → input_blocks.(1+(R+1)·i+j).1
//	down_blocks.i.downsamplers.0.conv          → input_blocks.(1+(R+1)·i+R).0.op
//	mid_block.resnets.{0,1}, attentions.0      → middle_block.{0,2}, middle_block.1
//	up_blocks.i.resnets.j                      → output_blocks.((R+1)·i+j).0
//	up_blocks.i.attentions.j                   → output_blocks.((R+1)·i+j).1
//	up_blocks.i.upsamplers.0.conv              → output_blocks.((R+1)·i+R).(1, or 2 after attention).conv
//	conv_norm_out, conv_out                    → out.0, out.2
//
// with the resnets' norm1, conv1, time_emb_proj, norm2, conv2, conv_shortcut as
// in_layers.0, in_layers.2, emb_layers.1, out_layers.0, out_layers.3, skip_connection
// (R is the resnets per down block). Attention blocks keep their names.

// diffusersModelNames and diffusersTextNames are the files load_diffusers looks for, in
// its order.
var (
	diffusersModelNames = []string{"diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.bin", "diffusion_pytorch_model.bin"}
	diffusersTextNames  = []string{"model.fp16.safetensors", "model.safetensors", "pytorch_model.fp16.bin", "pytorch_model.bin"}
)

// firstFile returns the first of names present in dir, "" when none is.
func firstFile(dir string, names []string) string {
	for _, n := range names {
		p := filepath.Join(dir, n)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p
		}
	}
	return ""
}

// LoadDiffusers loads a diffusers pipeline folder into MODEL, CLIP and VAE as
// DiffusersLoader does: the UNet from unet/, the text encoders from text_encoder/ (and
// text_encoder_2/: SDXL's pair), the VAE from vae/. The parts alias their files'
// mappings; Close the result once they are no longer used.
func LoadDiffusers(rt *gpu.Runtime, dir string, opts LoadOptions) (*Checkpoint, error) {
	unetPath, err := DiffusersUNetPath(dir)
	if err != nil {
		return nil, err
	}
	ck, err := loadDiffusersUNet(rt, unetPath, opts)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*Checkpoint, error) {
		ck.Close()
		return nil, err
	}
	if !opts.SkipCLIP {
		var paths []string
		for _, sub := range []string{"text_encoder", "text_encoder_2"} {
			if p := firstFile(filepath.Join(dir, sub), diffusersTextNames); p != "" {
				paths = append(paths, p)
			}
		}
		if len(paths) == 0 {
			return fail(&FormatError{Path: dir, Err: fmt.Errorf("no text_encoder/%s", strings.Join(diffusersTextNames, " or "))})
		}
		// load_clip's default type: one file is SD1/SD2 by its size, two are SDXL's pair.
		clipType := "stable_diffusion"
		if len(paths) == 2 {
			clipType = "sdxl"
		}
		te, err := LoadTextEncoders(rt, paths, clipType, opts)
		if err != nil {
			return fail(err)
		}
		ck.CLIP = te.CLIP
		ck.more = append(ck.more, te.file)
		ck.more = append(ck.more, te.more...)
	}
	if !opts.SkipVAE {
		vaePath := firstFile(filepath.Join(dir, "vae"), diffusersModelNames)
		if vaePath == "" {
			return fail(&FormatError{Path: dir, Err: fmt.Errorf("no vae/%s", strings.Join(diffusersModelNames, " or "))})
		}
		v, err := LoadVAE(rt, vaePath)
		if err != nil {
			return fail(err)
		}
		ck.VAE = v.VAE
		ck.VAE.Latent = FamilyLatent(ck.Family)
		ck.more = append(ck.more, v.file)
	}
	return ck, nil
}

// DiffusersUNetPath returns the UNet file of a diffusers folder, the first of the
// names load_diffusers tries.
func DiffusersUNetPath(dir string) (string, error) {
	p := firstFile(filepath.Join(dir, "unet"), diffusersModelNames)
	if p == "" {
		return "", &FormatError{Path: dir, Err: fmt.Errorf("no unet/%s", strings.Join(diffusersModelNames, " or "))}
	}
	return p, nil
}

// loadDiffusersUNet loads a diffusers-layout UNet file (UNet2DConditionModel's names)
// as an SD1/SD2/SDXL model.
func loadDiffusersUNet(rt *gpu.Runtime, path string, opts LoadOptions) (*Checkpoint, error) {
	f, err := openFile(path)
	if err != nil {
		return nil, err
	}
	ck, err := bindDiffusersUNet(rt, f, opts)
	if err != nil {
		f.Close()
		return nil, err
	}
	return ck, nil
}

func bindDiffusersUNet(rt *gpu.Runtime, f *tensorfile.File, opts LoadOptions) (*Checkpoint, error) {
	name := f.Name()
	if _, ok := f.Info("conv_in.weight"); !ok {
		return nil, &FormatError{Path: name, Err: errors.New("not a diffusers UNet (no conv_in.weight)")}
	}
	src := statedict.NewFileSource(rt, f)
	m := newDiffusersUNetMap(f)
	var infos []weights.TensorInfo
	for _, in := range f.Tensors() {
		ldm, ok := m.name(in.Name)
		if !ok {
			continue // load_diffusion_model_state_dict leaves unmapped keys out too
		}
		src.Alias(unetPrefix+ldm, statedict.Derived{Stored: in.Name})
		in.Name = unetPrefix + ldm
		infos = append(infos, in)
	}
	det, err := detect.Detect(detect.Input{Tensors: infos, Values: func(k string) ([]float32, error) {
		d, ok := src.Derivation(k)
		if !ok {
			return nil, fmt.Errorf("no tensor %q", k)
		}
		return storedValues(f, d.Stored)
	}})
	if err != nil {
		return nil, &FormatError{Path: name, Err: err}
	}
	d := det.Diffusion
	if d == nil || d.UNet == nil {
		return nil, &UnsupportedError{Path: name, What: "not an SD1/SD2/SDXL UNet in diffusers' names"}
	}
	if d.Unsupported != "" {
		return nil, &UnsupportedError{Path: name, What: d.Unsupported}
	}
	fam := d.Family
	if d.Family == detect.FamilySD2 && !d.Exact && d.UNet.InChannels == 4 {
		// The SD2 prediction rule reads a value (prediction in checkpoint.go): through
		// the alias here.
		if st, ok := src.Derivation(unetPrefix + sd2VKey); ok {
			v, err := storedValues(f, st.Stored)
			if err != nil {
				return nil, &FormatError{Path: name, Err: err}
			}
			cp := *d
			cp.Prediction = detect.PredictEps
			if populationStd(v) > 0.09 {
				cp.Prediction = detect.PredictV
			}
			d = &cp // prediction() finds no stored key there and keeps this
		}
	}
	um, err := loadUNetModel(rt, src, src, d, fam, opts.UNetHeads)
	if err != nil {
		return nil, err
	}
	um.Weights = newWeights(f, unetPrefix)
	return &Checkpoint{Model: um, Detected: det, Family: fam, file: f}, nil
}

// populationStd is torch.std(unbiased=False) in float64.
func populationStd(v []float32) float64 {
	var mean float64
	for _, x := range v {
		mean += float64(x)
	}
	mean /= float64(len(v))
	var ss float64
	for _, x := range v {
		ss += (float64(x) - mean) * (float64(x) - mean)
	}
	return math.Sqrt(ss / float64(len(v)))
}

// diffusersUNetMap renames one file's diffusers UNet keys.
type diffusersUNetMap struct {
	res    int          // resnets per down block (R)
	upAttn map[int]bool // up blocks with attentions
}

var (
	diffUNetBlock = regexp.MustCompile(`^(down|up)_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)$`)
	diffUNetScale = regexp.MustCompile(`^(down|up)_blocks\.(\d+)\.(downsamplers|upsamplers)\.0\.conv\.(.+)$`)
	diffUNetMid   = regexp.MustCompile(`^mid_block\.(resnets|attentions)\.(\d+)\.(.+)$`)
)

// diffUNetBasic are the top-level layers (UNET_MAP_BASIC).
var diffUNetBasic = map[string]string{
	"conv_in.": "input_blocks.0.0.", "time_embedding.linear_1.": "time_embed.0.", "time_embedding.linear_2.": "time_embed.2.",
	"add_embedding.linear_1.": "label_emb.0.0.", "add_embedding.linear_2.": "label_emb.0.2.",
	"class_embedding.linear_1.": "label_emb.0.0.", "class_embedding.linear_2.": "label_emb.0.2.",
	"conv_norm_out.": "out.0.", "conv_out.": "out.2.",
}

// diffUNetResnet are a resnet's layers (UNET_MAP_RESNET).
var diffUNetResnet = map[string]string{
	"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
	"norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection",
}

func newDiffusersUNetMap(f *tensorfile.File) *diffusersUNetMap {
	m := &diffusersUNetMap{upAttn: map[int]bool{}}
	for _, in := range f.Tensors() {
		if g := diffUNetBlock.FindStringSubmatch(in.Name); g != nil {
			i, _ := strconv.Atoi(g[2])
			j, _ := strconv.Atoi(g[4])
			if g[1] == "down" && g[3] == "resnets" && i == 0 {
				m.res = max(m.res, j+1)
			}
			if g[1] == "up" && g[3] == "attentions" {
				m.upAttn[i] = true
			}
		}
	}
	return m
}

// name returns the original name of a diffusers UNet key, false for keys the UNet
// does not have.
func (m *diffusersUNetMap) name(k string) (string, bool) {
	for from, to := range diffUNetBasic {
		if rest, ok := strings.CutPrefix(k, from); ok {
			return to + rest, true
		}
	}
	if g := diffUNetBlock.FindStringSubmatch(k); g != nil {
		i, _ := strconv.Atoi(g[2])
		j, _ := strconv.Atoi(g[4])
		n := (m.res+1)*i + j
		if g[1] == "down" {
			n++
		}
		part := "input_blocks."
		if g[1] == "up" {
			part = "output_blocks."
		}
		if g[3] == "attentions" {
			return part + strconv.Itoa(n) + ".1." + g[5], true
		}
		r, ok := resnetName(g[5])
		return part + strconv.Itoa(n) + ".0." + r, ok
	}
	if g := diffUNetScale.FindStringSubmatch(k); g != nil {
		i, _ := strconv.Atoi(g[2])
		if g[1] == "down" {
			return "input_blocks." + strconv.Itoa(1+(m.res+1)*i+m.res) + ".0.op." + g[4], true
		}
		c := "1"
		if m.upAttn[i] {
			c = "2"
		}
		return "output_blocks." + strconv.Itoa((m.res+1)*i+m.res) + "." + c + ".conv." + g[4], true
	}
	if g := diffUNetMid.FindStringSubmatch(k); g != nil {
		i, _ := strconv.Atoi(g[2])
		if g[1] == "attentions" {
			return "middle_block.1." + g[3], i == 0
		}
		r, ok := resnetName(g[3])
		return "middle_block." + strconv.Itoa(2*i) + "." + r, ok && i < 2
	}
	return "", false
}

// resnetName renames a resnet's layer (norm1.weight → in_layers.0.weight).
func resnetName(k string) (string, bool) {
	layer, param, ok := strings.Cut(k, ".")
	to, known := diffUNetResnet[layer]
	if !ok || !known {
		return "", false
	}
	return to + "." + param, true
}
