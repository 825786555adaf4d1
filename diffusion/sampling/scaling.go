package sampling

import "math"

// The input/output scalings of ComfyUI's EPS, V_PREDICTION, EDM and CONST model types,
// on float32 data with one sigma for the whole slice (sigma_data 1, EDM's 0.5). They
// are functions of the prediction type only, so ModelSampling implementations share
// them.

// edmSigmaData is EDM's sigma_data as ModelSamplingContinuousEDM sets it for "edm".
const edmSigmaData = 0.5

// CalculateInput scales the noisy latent before it enters the model: x/√(σ²+σ_data²)
// for eps, v and EDM models, unchanged for flow models.
func CalculateInput(p Prediction, sigma float32, x, out []float32) {
	if p == Flow {
		copy(out, x)
		return
	}
	var sd2 float32 = 1
	if p == EDM {
		sd2 = edmSigmaData * edmSigmaData
	}
	s := float32(math.Sqrt(float64(sigma*sigma + sd2)))
	for i, v := range x {
		out[i] = v / s
	}
}

// CalculateDenoised turns the model output into the denoised estimate.
func CalculateDenoised(p Prediction, sigma float32, modelOutput, x, out []float32) {
	switch p {
	case VPrediction:
		s2 := sigma*sigma + 1
		r := float32(math.Sqrt(float64(s2)))
		for i := range out {
			out[i] = x[i]/s2 - modelOutput[i]*sigma/r
		}
	case EDM:
		// x·σd²/(σ²+σd²) + output·σ·σd/√(σ²+σd²), in torch's order of float32 operations.
		const sd = edmSigmaData
		s2 := sigma*sigma + sd*sd
		r := float32(math.Sqrt(float64(s2)))
		for i := range out {
			out[i] = x[i]*(sd*sd)/s2 + modelOutput[i]*sigma*sd/r
		}
	default: // eps and flow: x − σ·output
		for i := range out {
			out[i] = x[i] - modelOutput[i]*sigma
		}
	}
}

// NoiseScaling mixes noise into the starting latent. For eps/v models: latent + σ·noise,
// or latent + √(1+σ²)·noise when maxDenoise (the first step of a full denoise); for
// flow models σ·noise + (1−σ)·latent.
func NoiseScaling(p Prediction, sigma float32, noise, latent, out []float32, maxDenoise bool) {
	if p == Flow {
		for i := range out {
			out[i] = sigma*noise[i] + (1-sigma)*latent[i]
		}
		return
	}
	s := sigma
	if maxDenoise {
		s = float32(math.Sqrt(float64(1 + sigma*sigma)))
	}
	for i := range out {
		out[i] = noise[i]*s + latent[i]
	}
}

// InverseNoiseScaling undoes the flow mixing at the end of sampling (latent/(1−σ));
// eps/v latents are returned unchanged.
func InverseNoiseScaling(p Prediction, sigma float32, latent, out []float32) {
	if p != Flow {
		copy(out, latent)
		return
	}
	for i, v := range latent {
		out[i] = v / (1 - sigma)
	}
}
