"""The one exception type for user mistakes: the CLI prints its message and exits 2, no traceback."""

import errno

# Said when a disk fills up (ENOSPC) or a quota is reached (EDQUOT) while writing data or a cache.
NO_SPACE_WAY_OUT = "no space left on the device; free some, or set --data.data_cache_dir to a disk with room."


class LitHFError(Exception):
    """A problem with the user's input or environment, with a message that names it and the way out."""


class ConfigError(LitHFError, ValueError):
    """Options that contradict each other or are out of range; raised by constructors, naming the options."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message: enough to say what went wrong without a traceback."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def check_positive(**values: int | None) -> None:
    """Raises for the first option given as zero or less (None means unset)."""
    for name, value in values.items():
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be positive, got {value}.")


def say(line: str) -> None:
    """A notice to the user, once for all processes: `lit_hf: <what happens instead and why>`."""
    from lightning.pytorch.utilities.rank_zero import rank_zero_only  # here: `download` runs without Lightning

    if rank_zero_only.rank == 0:
        print(f"lit_hf: {line}", flush=True)


def no_space(err: BaseException) -> bool:
    """Whether `err`, or an error it was raised from, is a full disk or quota (`datasets` wraps it in its own)."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def user_error(err: BaseException) -> LitHFError | None:
    """The LitHFError behind `err`, if any: jsonargparse re-raises constructor errors as a plain ValueError."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, LitHFError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
