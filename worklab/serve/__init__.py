"""The trained model in use: the exported Classifier and formats, the images predict reads and what it writes."""
