"""Path options: relative paths in a config file resolve against that file's folder, on the command line against
the working directory.

jsonargparse parses each `--config` file with its folder as the working directory, so a type whose parser makes
the path absolute resolves it there. Values reach the constructors as plain `str`.
"""

import os

from jsonargparse.typing import register_type


class LocalPath(str):
    """A local file or folder (data files, caches): made absolute where it is parsed."""


class ModelPath(str):
    """A hub id or a local folder (models, tokenizers, configs): made absolute only when that folder exists, so
    `openai-community/gpt2` stays a hub id while `quickstart/byte-gpt2` in a config file finds the folder beside it."""


def _local(value: str) -> LocalPath:
    return LocalPath(os.path.abspath(os.path.expanduser(value)))


def _model(value: str) -> ModelPath:
    local = os.path.abspath(os.path.expanduser(value))
    return ModelPath(local if os.path.isdir(local) else value)


register_type(LocalPath, serializer=str, deserializer=_local)
register_type(ModelPath, serializer=str, deserializer=_model)


def plain(value: object) -> object:
    """The value with path types turned into plain `str`, so checkpoints and hparams.yaml hold no lit_hf types."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value
