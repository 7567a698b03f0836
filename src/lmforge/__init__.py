"""lmforge: adapt, evaluate, explain, serve and maintain language models from one config file."""

# lmforge never downloads: every load passes local_files_only (models/build.py), so importing it
# leaves the process's environment alone (a notebook's own hub downloads keep working).
__version__ = "0.1.0"


def __getattr__(name):  # lazy: `import lmforge` stays cheap for the CLI's --help
    if name == "Predictor":
        from .predictor import Predictor

        return Predictor
    raise AttributeError(name)
