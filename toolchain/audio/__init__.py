"""The feature contract: audio file -> fixed-length clip -> log-mel "image", parameterized by one frozen config.

Training, export parity and scoring all compute features through this package and nothing else. It imports
nothing of ours beyond `toolchain.errors`, `toolchain.io` and `toolchain.progress`.
"""

from toolchain.audio.config import (
    DEFAULT_CONFIG,
    FEATURE_CONTRACT_VERSION,
    FeatureConfig,
    check_reproducible,
)
from toolchain.audio.decode import (
    AUDIO_EXTENSIONS,
    find_audio_files,
    is_audio_path,
    load_audio,
)
from toolchain.audio.features import features_from_path, stack_channels

__all__ = [
    "AUDIO_EXTENSIONS", "DEFAULT_CONFIG", "FEATURE_CONTRACT_VERSION", "FeatureConfig", "check_reproducible",
    "features_from_path", "find_audio_files", "is_audio_path", "load_audio", "stack_channels",
]
