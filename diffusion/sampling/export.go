package sampling

// KarrasSigmas is k-diffusion's get_sigmas_karras with explicit bounds (ComfyUI's
// KarrasScheduler node): n steps from sigmaMax to sigmaMin, then 0.
func KarrasSigmas(n int, sigmaMin, sigmaMax, rho float64) []float32 {
	return karrasSigmas(n, sigmaMin, sigmaMax, rho)
}

// ExponentialSigmas is k-diffusion's get_sigmas_exponential with explicit bounds
// (ComfyUI's ExponentialScheduler node).
func ExponentialSigmas(n int, sigmaMin, sigmaMax float64) []float32 {
	return exponentialSigmas(n, sigmaMin, sigmaMax)
}

// NewDiscreteZSNR is NewDiscrete with the table rescaled to zero terminal SNR (ComfyUI's
// rescale_zero_terminal_snr_sigmas, ModelSamplingDiscrete's zsnr option): √ᾱ is shifted
// so the last step reaches 0 and scaled back to its first value, the last ᾱ is pinned at
// 4.8973451890853435e-08 so the last sigma stays finite. Computed in float64, stored in
// float32, as ComfyUI does.
func NewDiscreteZSNR(pred Prediction, linearStart, linearEnd float64, timesteps int) (*Discrete, error) {
	if _, err := NewDiscrete(pred, linearStart, linearEnd, timesteps); err != nil {
		return nil, err
	}
	return newDiscreteFromBetas(pred, linearBetas(linearStart, linearEnd, timesteps), true), nil
}

// Linspace32 is torch.linspace(a, b, n) in float32 (the first half stepped from a, the
// second from b), for nodes that build schedules of their own.
func Linspace32(a, b float32, n int) []float32 {
	return linspace32(a, b, n)
}
