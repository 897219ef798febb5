"""Diffusion maths only (no networks, no sampling loops): EDM preconditioning and training loss."""
from bassgen.diffusion.edm import (denoising_loss, loss_weight, precondition, sample_sigma,
                                   scalings, val_loss_at_sigma)

__all__ = ["denoising_loss", "loss_weight", "precondition", "sample_sigma", "scalings",
           "val_loss_at_sigma"]
