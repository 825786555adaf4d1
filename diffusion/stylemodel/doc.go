// Package stylemodel holds the style models of ComfyUI 0.3.64's StyleModelLoader
// (comfy/sd.py load_style_model): Flux's Redux image encoder
// (comfy/ldm/flux/redux.py ReduxImageEncoder: SigLIP features to T5-width tokens) and
// the T2I-Adapter style model for SD1.x (comfy/t2i_adapter/adapter.py StyleAdapter: a
// small transformer that turns CLIP ViT-L features into extra text tokens). Their
// output is concatenated to a conditioning's tokens by StyleModelApply.
//
// It imports gpu, weights/tensorfile, diffusion/nn and diffusion/statedict.
package stylemodel
