"""bassgen: mix-conditioned bass generation by latent diffusion (Pasini et al., ICASSP 2024)."""

__version__ = "0.1.0"
