"""The models (:func:`fer_ray.models.registry.create_model`): each maps a normalized batch (B, 1, S, S) to
``logits`` (B, 7) and, for autoencoders, ``recon`` (B, 1, S, S). The ModelConfig is torch-free for the ONNX engines."""
