package detect_test

import (
	"fmt"

	"github.com/forgeflow/forgeflow/weights"
	"github.com/forgeflow/forgeflow/weights/detect"
)

func Example() {
	// A LoRA in kohya's key style, described by names and shapes only.
	in := detect.Input{Tensors: []weights.TensorInfo{
		{Name: "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight", DType: weights.F16, Shape: []int64{16, 768}},
		{Name: "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight", DType: weights.F16, Shape: []int64{320, 16}},
		{Name: "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.alpha", DType: weights.F16},
	}}
	m, err := detect.Detect(in)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(m.Kind, m.LoRA.Format, m.LoRA.Base, m.LoRA.Rank)
	// Output: lora kohya sd1 16
}
