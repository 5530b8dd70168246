"""Images: token grids, Halton orders, VQ tokenizers (a small VQ-VAE and LlamaGen's VQ-8), image grids,
and FID / Inception Score (spec section 5)."""

from partgm.images.digits import DIGITS_LEVELS, load_digit_tokens, tokens_to_images
from partgm.images.digits_classifier import (
    DigitsClassifier,
    class_accuracy,
    digits_fid,
    digits_fid_interval,
    features,
    load_digits_classifier,
    save_digits_classifier,
    train_digits_classifier,
)
from partgm.images.fid import (
    FIDRecord,
    feature_statistics,
    fid_record,
    frechet_distance,
    inception_score,
    tf_inception_fid,
)
from partgm.images.grid import save_image_grid
from partgm.images.halton import arccos_schedule, halton_order, halton_sequence
from partgm.images.llamagen_vq import LlamaGenVQ, LlamaGenVQConfig, load_llamagen_vq
from partgm.images.vqvae import (
    VQVAE,
    VectorQuantizer,
    VQVAEConfig,
    load_image_folder,
    load_vqvae,
    save_vqvae,
    train_vqvae,
)

__all__ = [
    "DIGITS_LEVELS",
    "VQVAE",
    "DigitsClassifier",
    "FIDRecord",
    "LlamaGenVQ",
    "LlamaGenVQConfig",
    "VQVAEConfig",
    "VectorQuantizer",
    "arccos_schedule",
    "class_accuracy",
    "digits_fid",
    "digits_fid_interval",
    "feature_statistics",
    "features",
    "fid_record",
    "frechet_distance",
    "halton_order",
    "halton_sequence",
    "inception_score",
    "load_digit_tokens",
    "load_digits_classifier",
    "load_image_folder",
    "load_llamagen_vq",
    "load_vqvae",
    "save_digits_classifier",
    "save_image_grid",
    "save_vqvae",
    "tf_inception_fid",
    "tokens_to_images",
    "train_digits_classifier",
    "train_vqvae",
]
