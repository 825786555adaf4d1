package sd

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/forgeflow/forgeflow/weights/detect"
	"github.com/forgeflow/forgeflow/weights/safetensors"
)

// toDiffusersVAEName renames an original-layout VAE key the way diffusers lays the
// autoencoder out (levels resolution levels), for writing test files.
func toDiffusersVAEName(k string, levels int) (string, bool) {
	r := []struct {
		re  *regexp.Regexp
		fn  func(m []string) string
		att bool
	}{
		{regexp.MustCompile(`^encoder\.down\.(\d+)\.block\.(\d+)\.(.*)$`), func(m []string) string { return "encoder.down_blocks." + m[1] + ".resnets." + m[2] + "." + m[3] }, false},
		{regexp.MustCompile(`^encoder\.down\.(\d+)\.downsample\.(.*)$`), func(m []string) string { return "encoder.down_blocks." + m[1] + ".downsamplers.0." + m[2] }, false},
		{regexp.MustCompile(`^decoder\.up\.(\d+)\.block\.(\d+)\.(.*)$`), func(m []string) string {
			l, _ := strconv.Atoi(m[1])
			return fmt.Sprintf("decoder.up_blocks.%d.resnets.%s.%s", levels-1-l, m[2], m[3])
		}, false},
		{regexp.MustCompile(`^decoder\.up\.(\d+)\.upsample\.(.*)$`), func(m []string) string {
			l, _ := strconv.Atoi(m[1])
			return fmt.Sprintf("decoder.up_blocks.%d.upsamplers.0.%s", levels-1-l, m[2])
		}, false},
		{regexp.MustCompile(`^(encoder|decoder)\.mid\.block_(\d)\.(.*)$`), func(m []string) string {
			n, _ := strconv.Atoi(m[2])
			return fmt.Sprintf("%s.mid_block.resnets.%d.%s", m[1], n-1, m[3])
		}, false},
		{regexp.MustCompile(`^(encoder|decoder)\.mid\.attn_1\.(norm|q|k|v|proj_out)\.(.*)$`), func(m []string) string {
			to := map[string]string{"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}[m[2]]
			return m[1] + ".mid_block.attentions.0." + to + "." + m[3]
		}, true},
		{regexp.MustCompile(`^(encoder|decoder)\.norm_out\.(.*)$`), func(m []string) string { return m[1] + ".conv_norm_out." + m[2] }, false},
	}
	for _, x := range r {
		if m := x.re.FindStringSubmatch(k); m != nil {
			out := x.fn(m)
			out = regexp.MustCompile(`\.nin_shortcut\.`).ReplaceAllString(out, ".conv_shortcut.")
			return out, x.att && m[len(m)-1] == "weight" && m[2] != "norm"
		}
	}
	return k, false
}

// TestDiffusersVAE writes one VAE in the original and in the diffusers layout and
// checks that both decode alike, and that a saved checkpoint holds the original names.
func TestDiffusersVAE(t *testing.T) {
	rt := ckRuntime(t)
	dir := t.TempDir()
	spec := TinyRandomSpec(detect.FamilySD1)
	spec.VAE.Mult = []int{1, 2, 2}
	var ldm randomTensors
	ldm.vae("", spec.VAE)
	var diff []valueTensor
	for _, x := range ldm {
		name, linear := toDiffusersVAEName(x.Name, len(spec.VAE.Mult))
		shape := x.Shape
		if linear {
			shape = shape[:2]
		}
		diff = append(diff, valueTensor{name: name, shape: shape, vals: x.Values(5)})
	}
	ldmPath, diffPath := filepath.Join(dir, "ldm.safetensors"), filepath.Join(dir, "diffusers.safetensors")
	writeTensors(t, ldmPath, ldm, 5)
	writeValues(t, diffPath, diff)
	a, err := LoadVAE(rt, ldmPath)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := LoadVAE(rt, diffPath)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	lat, _ := rt.FromFloat32(ckRandVals(6, 4*5*6), 1, 4, 5, 6)
	defer lat.Release()
	ia, err := a.VAE.Decode(context.Background(), lat)
	if err != nil {
		t.Fatal(err)
	}
	ib, err := b.VAE.Decode(context.Background(), lat)
	if err != nil {
		t.Fatal(err)
	}
	for i := range ia.Pix {
		if ia.Pix[i] != ib.Pix[i] {
			t.Fatalf("pixel %d: original layout %v, diffusers %v", i, ia.Pix[i], ib.Pix[i])
		}
	}

	// Saved with a checkpoint, the diffusers VAE gets the original names and shapes.
	ckPath := filepath.Join(dir, "sd1.safetensors")
	writeSpec(t, ckPath, tinySD1(8))
	ck, err := LoadCheckpoint(rt, ckPath, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	var buf bytes.Buffer
	if err := SaveCheckpoint(&buf, ck.Model, ck.CLIP, b.VAE, "", nil); err != nil {
		t.Fatal(err)
	}
	saved, err := safetensors.OpenBytes("saved", buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	ref, err := safetensors.Open(ldmPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	for _, info := range ref.Tensors() {
		got, ok := saved.Info(vaePrefix + info.Name)
		if !ok {
			t.Fatalf("saved checkpoint lacks %s%s", vaePrefix, info.Name)
		}
		if fmt.Sprint(got.Shape) != fmt.Sprint(info.Shape) {
			t.Errorf("%s saved as %v, want %v", info.Name, got.Shape, info.Shape)
		}
	}
}
