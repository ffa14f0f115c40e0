"""What a model looks at: Grad-CAM maps and their overlays on the images."""

from knifejax.explain.gradcam import grad_cam, grad_cam_and_scores

__all__ = ["grad_cam", "grad_cam_and_scores"]
