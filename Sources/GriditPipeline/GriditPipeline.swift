// Diffusion schedule, samplers, counter-based noise and grid layout (GriDiT sampling core).
