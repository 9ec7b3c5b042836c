"""The models: :func:`fer_ray.models.registry.create_model` builds any registered model by name.

Every model maps a normalized batch (B, 1, S, S) to a dict with ``logits`` (B, 7) and, for autoencoders,
``recon`` (B, 1, S, S), so losses and evaluation are shared. :class:`~fer_ray.models.config.ModelConfig` is
torch-free: the ONNX Runtime engines of batch scoring and Serve read it without importing torch.
"""
