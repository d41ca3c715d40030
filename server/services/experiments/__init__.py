"""Experiments on the network: switch channels off (ablation), cover part of the image (occlusion probe),
fool it (adversarial examples), compare two networks on one image. One module per experiment; the
:class:`~server.services.experiments.service.Experiments` service caches, admits and cancels their work."""
