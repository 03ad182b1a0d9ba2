"""Contrast-enhanced T1 synthesis from non-contrast MRI (Chen et al., 3D HR-FCN)."""

__version__ = "0.1.0"
