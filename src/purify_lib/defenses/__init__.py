"""GAN-based purifiers and defenses, one module per paper."""
