"""Why did the model decide? Class activation maps for any class, overlays, faithfulness.

Methods (``--method``): ``auto`` (the default: ``cam`` for linear heads, else ``gradcam``), ``cam``
(exact, gradient-free),
and the gradient family from pytorch-grad-cam: ``gradcam``, ``gradcam++``, ``layercam``,
``scorecam``. The CLI builds its choices from :data:`METHODS`.
"""

from ._explain import (
    Explanation,
    METHODS,
    checked_method,
    class_activation_maps,
    display_image,
    explain_image,
    explain_images,
    explanations_of,
    render_panel,
    resolve_classes,
    write_explanations,
)

__all__ = ["checked_method", "METHODS", "Explanation", "display_image", "explain_image", "explain_images", "resolve_classes",
           "render_panel", "write_explanations", "class_activation_maps", "explanations_of"]
