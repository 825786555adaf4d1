package sd

import (
	"context"

	"github.com/forgeflow/forgeflow/diffusion/mmdit"
	"github.com/forgeflow/forgeflow/diffusion/unet"
	"github.com/forgeflow/forgeflow/gpu"
)

// Network is the diffusion network a Model samples with: the SD UNet, SD3's MMDiT, Flux.
// Forward returns the raw model output for one batch, what ComfyUI's
// BaseModel.apply_model hands to calculate_denoised; it must check ctx between blocks
// and must not keep in's tensors.
type Network interface {
	Forward(ctx context.Context, rt *gpu.Runtime, in NetInputs) (*gpu.Tensor, error)
}

// NetInputs are one batch of a network's inputs (apply_model's x, t and conds).
type NetInputs struct {
	X         *gpu.Tensor // (B, C, H, W), calculate_input applied
	Timesteps *gpu.Tensor // (B), the model sampling's timesteps
	Context   *gpu.Tensor // (B, T, D): the text conditioning (c_crossattn)
	// Y is the label vector (B, adm): SDXL's size-conditioned one, SD3's and Flux's
	// pooled text output; nil when the entries carry none.
	Y *gpu.Tensor
	// Guidance is Flux's distilled guidance scale per item (B); nil when the model takes
	// none or the conditioning disabled it.
	Guidance *gpu.Tensor
	// DenoiseMask is the run's noise mask over the batch's region (B, C, H, W), 1 =
	// denoise; set only for a Flux Fill, whose concat_cond falls back to it (nil: none).
	DenoiseMask *gpu.Tensor
	// AttentionMask (B or 1, L, L) is an additive bias on a Flux's attention scores over
	// its text then image tokens (ComfyUI's attention_mask, resized to the batch's token
	// grid); nil for none. Other networks take none.
	AttentionMask *gpu.Tensor
	// SkipDouble and SkipSingle are the blocks Skip Layer Guidance leaves out:
	// ComfyUI's patches_replace of ("dit", "double_block" / "single_block", i). An MMDiT
	// has joint (double) blocks only.
	SkipDouble, SkipSingle []int
	// RefLatents are Flux Kontext's reference latents (ref_latents), each (B, C, h, w) in
	// the model's latent space; RefMethod places them ("" for offset). Nil for models
	// that take none.
	RefLatents []*gpu.Tensor
	RefMethod  string
	// Control holds ControlNet / T2I-Adapter residuals for an SD UNet, nil for none.
	Control *unet.Control
	// UNetHooks are a UNet's patches for this call (FreeU, attention replacements), nil
	// for none; other networks ignore them.
	UNetHooks *unet.Hooks
}

// wantsDenoiseMask reports whether a network reads NetInputs.DenoiseMask (has a
// ReadsDenoiseMask method that says so), so that the guider builds it only then.
func wantsDenoiseMask(net Network) bool {
	r, ok := net.(interface{ ReadsDenoiseMask() bool })
	return ok && r.ReadsDenoiseMask()
}

// unetNetwork runs an SD UNet (which has no blocks to skip).
type unetNetwork struct{ m *unet.Model }

func (n unetNetwork) Forward(ctx context.Context, rt *gpu.Runtime, in NetInputs) (*gpu.Tensor, error) {
	return n.m.Forward(ctx, rt, unet.Inputs{X: in.X, Timesteps: in.Timesteps, Context: in.Context, Y: in.Y, Control: in.Control, Hooks: in.UNetHooks})
}

// MMDiTNetwork runs an SD3 MMDiT.
type MMDiTNetwork struct{ Model *mmdit.Model }

// Forward implements Network.
func (n MMDiTNetwork) Forward(ctx context.Context, rt *gpu.Runtime, in NetInputs) (*gpu.Tensor, error) {
	return n.Model.Forward(ctx, rt, mmdit.Inputs{X: in.X, Timesteps: in.Timesteps, Context: in.Context, Y: in.Y, Skip: in.SkipDouble})
}

// network returns the model's network: Net, or its UNet.
func (m *Model) network() Network {
	if m.Net != nil {
		return m.Net
	}
	if m.UNet != nil {
		return unetNetwork{m.UNet}
	}
	return nil
}
