"""The input side: image lists and their checks, the tf.data reader, augmentations, the demo set."""
