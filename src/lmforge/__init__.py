"""lmforge: adapt, evaluate, explain, serve and maintain language models from one config file."""

import os as _os

# lmforge never downloads: hub ids fail fast instead of retrying for ~46 s.
_os.environ.setdefault("HF_HUB_OFFLINE", "1")
_os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
_os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__version__ = "0.1.0"


def __getattr__(name):  # lazy: `import lmforge` stays cheap for the CLI's --help
    if name == "Predictor":
        from .predictor import Predictor

        return Predictor
    raise AttributeError(name)
