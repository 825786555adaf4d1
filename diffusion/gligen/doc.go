// Package gligen holds GLIGEN, the grounded-generation add-on of ComfyUI 0.3.64's
// GLIGENLoader (comfy/gligen.py): a position net that turns text boxes (a pooled CLIP
// text embedding and a rectangle) into grounding tokens, and one gated self-attention
// "fuser" per UNet spatial transformer that mixes those tokens into the image tokens
// right after the transformer block's self-attention (the UNet's middle_patch hook).
//
// It imports gpu, diffusion/nn, diffusion/unet (the attention and feed-forward layers
// the fusers share with the UNet), diffusion/statedict and weights/tensorfile.
package gligen
