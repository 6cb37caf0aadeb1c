"""Hydra launcher plugin of prresq: submitit's SLURM launcher with resources checked before submission."""
