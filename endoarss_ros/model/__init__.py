"""Pure PyTorch EndoARSS: backbone, adapters, SMA, heads, weights loading. No ROS, no file I/O beyond weights."""
