// Package lora applies LoRA and LyCORIS files to networks built from diffusion/nn layers,
// as ComfyUI's LoraLoader does (comfy/lora.py, comfy/lora_convert.py,
// comfy/weight_adapter, comfy/model_patcher.py calculate_weight).
//
// A File is read once (memory-mapped); KeyMap says which model weight each LoRA module
// name patches (UNetKeyMap, CLIPKeyMap, from the model's own keys); File.Resolve pairs
// the file's adapters with weights: LoRA/LoCon up·down (every key spelling: kohya,
// diffusers, PEFT lora_A/lora_B, …) with alpha, Tucker mid and DoRA; LoHa; LoKr; full
// diffs of weights, biases and norms; set_weight. A Network holds a model tree, its
// stack of (Set, strength) and the patched tree, rebuilt layer by layer from the
// untouched base so that stacking or dropping LoRAs never rereads the checkpoint.
//
// Patched weights are merged into a copy (float32 arithmetic, rounded to the weight's
// dtype, only the patched layers copied) or, for float8 and quantized weights, added at
// run time beside the layer's product through nn.Patch.
//
// It imports diffusion/nn, diffusion/statedict, gpu and weights.
package lora
