"""Train, export and deploy ResNet audio classifiers on log-mel spectrograms."""

__version__ = "0.1.0"
