"""Networks: ``blocks/`` (layer library), ``hybrid_unet.HybridUNet``, ``baselines``, ``report``.

Every model takes ``in_channels`` and ``num_classes``, exposes ``total_stride`` and returns a
list of logits (highest resolution first) in training with deep supervision, else one tensor
``(B, K, D, H, W)``. Baselines import MONAI, so they are imported from
``hybrid_unet.models.baselines`` explicitly.
"""

from hybrid_unet.models.hybrid_unet import HybridUNet

__all__ = ["HybridUNet"]
