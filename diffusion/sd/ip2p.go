package sd

import (
	"fmt"

	"github.com/forgeflow/forgeflow/gpu/resample"
)

// InstructPix2Pix models (comfy/model_base.py IP2P, SD15_instructpix2pix,
// SDXL_instructpix2pix): the UNet's input is the noisy latent followed by the latent of
// the image to edit, so its input conv is twice the latent's width. The image latent
// comes from each conditioning entry's concat_latent_image (InstructPixToPixConditioning
// puts it there) and is used as the VAE made it: unlike an inpainting model's, it is
// not scaled into the model's latent space (process_ip2p_image_in is the identity for
// the eps and v models forgeflow runs; only CosXL's EDM variant scales it, and EDM
// sampling is not implemented).

// ip2pConcat is IP2P.concat_cond for one conditioning entry of a run on a latent of
// shape (N, C, H, W): the entry's concat_latent_image resized bilinearly (centre crop)
// to H×W when its size differs and repeated or picked to N items
// (utils.resize_to_batch_size), or zeros without one.
func ip2pConcat(m *Model, c Cond, shape [4]int) ([]float32, error) {
	n, ch, h, w := shape[0], shape[1], shape[2], shape[3]
	if in := m.inChannels(); in != 2*ch {
		return nil, fmt.Errorf("the InstructPix2Pix model takes %d input channels, a %d-channel latent with its image latent makes %d", in, ch, 2*ch)
	}
	if c.ConcatLatent == nil {
		return make([]float32, n*ch*h*w), nil
	}
	t := c.ConcatLatent
	if t.Rank() != 4 || t.Dim(1) != ch || t.Dim(0) < 1 {
		return nil, fmt.Errorf("concat_latent_image %v is not a (N, %d, H, W) latent", t.Shape(), ch)
	}
	d, err := t.Float32()
	if err != nil {
		return nil, fmt.Errorf("concat_latent_image: %w", err)
	}
	if t.Dim(2) != h || t.Dim(3) != w {
		if d, err = resample.Upscale(d, t.Dim(0), ch, t.Dim(2), t.Dim(3), w, h, "bilinear", "center"); err != nil {
			return nil, fmt.Errorf("concat_latent_image: %w", err)
		}
	}
	return resizeToBatch(d, t.Dim(0), ch*h*w, n), nil
}
