"""Class maps from one backbone pass, one small module per method; below the inference path, which calls them.

- :mod:`.cam`: exact Class Activation Maps for a linear head on average-pooled features;
- :mod:`.head_gradient`: Grad-CAM for any head on average-pooled features, in numpy (the head's own backward pass);
- :mod:`.gradcam`: the pytorch-grad-cam family, for backbones that pool otherwise (needs the torch extra).
"""
