"""ConvScope's model zoo: the registry, bundled architectures, their weights and training code."""
