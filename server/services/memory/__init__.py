"""The server's resident memory: the C allocator under PyTorch's tensors (issue 21)."""
