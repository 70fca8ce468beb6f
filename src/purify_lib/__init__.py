"""purify_lib: data, classifiers, attacks, GAN-based defenses and their honest evaluation.

The library behind the purify book. Images are float N×C×H×W tensors in [0, 1]; models return logits;
attacks are functions ``attack(model, x, y, **params) -> x_adv``; a purifier is an ``nn.Module`` mapping
images to images.
"""
__version__ = "0.1.0"
