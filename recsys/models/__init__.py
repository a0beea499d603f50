"""Keras models of the pipeline: the augmentation GAN, the recommender, and the runtime they share."""
