"""A dataclass as a command line, for train_gpt2.py's TrainConfig: each field a --flag-with-dashes
with its help text, `auto` for a default of None that is resolved later, and each number checked
against the range declared beside its field, so that a bad value fails where it enters, naming its
flag, instead of deep inside AdamW, the model or the schedule.
"""

import argparse
import math
from dataclasses import field, fields
from typing import Any

# The ranges a field can declare (option's valid), and their tests.
RANGES = {
    "be positive": lambda v: v > 0,
    "be at least 0": lambda v: v >= 0,
    "lie in [0, 1]": lambda v: 0 <= v <= 1,
    "lie in [0, 1)": lambda v: 0 <= v < 1,
    "lie in [0, 2**63)": lambda v: 0 <= v < 2**63,  # what torch.manual_seed takes
    "be at least 50257": lambda v: v >= 50257,  # GPT-2's vocabulary: the shards' token ids
}


def option(default: Any, help_text: str, valid: str = "") -> Any:
    """A dataclass field with its --help text and its valid range (a key of RANGES)."""
    return field(default=default, metadata={"help": help_text, "valid": valid})


def parse(cls: type, argv: list[str] | None, description: str) -> Any:
    """An instance of the dataclass cls from the command line argv."""
    parser = argparse.ArgumentParser(description=description)
    types = {int: int, float: float, int | None: auto_int}
    for f in fields(cls):
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata["help"] + ("" if f.default is None else f" (default: {f.default})")
        if f.type in (bool, bool | None):
            how = dict(action=argparse.BooleanOptionalAction)
        else:
            how = dict(type=types.get(f.type, str))
        parser.add_argument(flag, default=f.default, help=help_text, **how)
    return cls(**vars(parser.parse_args(argv)))


def auto_int(value: str) -> int | None:
    return None if value == "auto" else int(value)


def check_ranges(config: Any) -> None:
    """ValueError naming the first field whose value lies outside its declared range."""
    for f in fields(config):
        value, valid = getattr(config, f.name), f.metadata["valid"]
        if valid and value is not None and not (math.isfinite(value) and RANGES[valid](value)):
            raise ValueError(f"--{f.name.replace('_', '-')} must {valid}, not {value}")
