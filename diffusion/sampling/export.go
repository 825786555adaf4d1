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
