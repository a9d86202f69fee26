"""Digital base (数字底座): the layer catalogue and its versioned feature tables."""
