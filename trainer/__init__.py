"""Bullet OS trainer: NumPy autograd, the Llama-style model with tiled attention, BPE tokenizer
training, resumable training with spike recovery, export to signed BQ4 `.bullet` files, and the
mother (router) trainer. Command line: `bullet-train` (trainer.cli); see trainer/README.md."""
