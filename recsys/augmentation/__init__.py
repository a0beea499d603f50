"""GAN augmentation: segments, synthesis, decoding, filters, quality measures, plots and the stage itself."""
