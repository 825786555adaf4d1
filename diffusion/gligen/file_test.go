package gligen

import (
	"strconv"
	"testing"

	"github.com/forgeflow/forgeflow/diffusion/unet"
)

// TestFuserKey: fuser prefixes name their UNet block with or without a model prefix
// and with the fuser inside a transformer block or right under the UNet block.
func TestFuserKey(t *testing.T) {
	for p, want := range map[string]unet.Block{
		"input_blocks.4.1.transformer_blocks.0.fuser.":                         {Part: unet.PartInput, Number: 4},
		"model.diffusion_model.output_blocks.11.1.transformer_blocks.0.fuser.": {Part: unet.PartOutput, Number: 11},
		"middle_block.1.transformer_blocks.0.fuser.":                           {Part: unet.PartMiddle, Number: 1},
		"input_blocks.7.fuser.":                                                {Part: unet.PartInput, Number: 7},
	} {
		g := fuserKey.FindStringSubmatch(p)
		if g == nil {
			t.Errorf("%q: no block", p)
			continue
		}
		n, err := strconv.Atoi(g[2])
		if err != nil {
			t.Fatal(err)
		}
		if got := (unet.Block{Part: partNames[g[1]], Number: n}); got != want {
			t.Errorf("%q: %+v, want %+v", p, got, want)
		}
	}
	for _, p := range []string{"fuser.", "time_embed.fuser.", "input_blocksX.1.fuser."} {
		if fuserKey.MatchString(p) {
			t.Errorf("%q matched a block", p)
		}
	}
}
