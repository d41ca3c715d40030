"""The convolution sandbox: operations on small grids, kernel presets, a kernel applied to a real image."""
