"""Item content: the text encoder, its embedding cache, and the item vectors the later stages read."""
