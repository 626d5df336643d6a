"""worklab: retrain and test image classifiers on TensorFlow, configured by Hydra.

Importing the package does not import TensorFlow, so configuration answers
(`run.py --help`, `--cfg job`) stay fast.
"""
