"""Command-line parsing of the absl entry points (`launch.train`, `launch.probe`, `launch.geometry_probe`,
`launch.compile`): a bad command line is one line on stderr and exit code 2, never a traceback through absl and
ml_collections.

What it catches: a config file that does not exist or does not load (`--config configs/nope.py`), a bad config
argument (`configs/scannet.py:smok`: the config's own error, e.g. "unknown config argument 'smok'; accepted:
['det', 'smoke']"), an unknown `--config.key` override, a value that does not parse, an unknown flag.

  app.run(main, flags_parser=cli.parse_flags)
"""

from __future__ import annotations

import sys
from typing import List, Optional, Sequence

from absl import flags

from dos_jax import schema

EXIT_BAD_COMMAND_LINE = 2
_KEYS_HINT = "Accepted keys are those of dos_jax/schema.py (e.g. --config.zipf_alpha, --config.data.root)."


class CommandLineError(ValueError):
  """A bad command line; the message is the one line to print."""


def _last_line(text: str) -> str:
  """The last non-empty line of an error text (ml_collections embeds the config's whole traceback in it)."""
  lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
  return lines[-1] if lines else str(text)


def _config_flag_names(flag_values: flags.FlagValues) -> List[str]:
  """Names of the config-file flags (`config_flags.DEFINE_config_file`) among `flag_values`."""
  return [name for name in flag_values if type(flag_values[name].parser).__name__ == "ConfigFileFlagParser"]


def _arg_value(argv: Sequence[str], name: str) -> str:
  """The value given to --name on the command line (`--name=V` or `--name V`), '' if absent."""
  for i, arg in enumerate(argv):
    if arg.startswith(f"--{name}="):
      return arg.split("=", 1)[1]
    if arg == f"--{name}" and i + 1 < len(argv):
      return argv[i + 1]
  return ""


def check_flags(argv: Sequence[str], flag_values: flags.FlagValues = flags.FLAGS) -> List[str]:
  """Parses `argv` into `flag_values`; returns the remaining arguments or raises CommandLineError (one line)."""
  argv = list(argv)
  names = _config_flag_names(flag_values)
  try:
    rest = flag_values(argv)
    for name in names:
      if flag_values[name].value is not None:
        flag_values[name].value.keys  # pylint: disable=pointless-statement  (a file that did not load raises here)
    return rest
  except OSError as e:  # ml_collections defers a config file that does not load to its first use
    reason = _last_line(str(e))
    if "No such file" in reason:
      reason = "no such file (a path relative to the current directory, then ':arg' if the config takes one)"
    what = " ".join(f"--{n} {_arg_value(argv, n)}" for n in names)
    raise CommandLineError(f"ConfigError: {what}: cannot load the config file: {reason}") from None
  except flags.Error as e:
    text = str(e)
    overrides = [a.split("=", 1)[0] for a in argv[1:] if any(a.startswith(f"--{n}.") for n in names)]
    unknown = [o for o in overrides if o[2:] not in flag_values]
    if unknown:  # only the keys a config has are defined as override flags
      raise CommandLineError(f"ConfigError: unknown config key(s) on the command line: {', '.join(unknown)}. "
                             + _KEYS_HINT) from None
    for name in names:
      if text.startswith(f"flag --{name}="):  # the config file loaded but its get_config(arg) raised
        raise CommandLineError(f"ConfigError: --{name} {_arg_value(argv, name)}: {_last_line(text)}") from None
    raise CommandLineError(f"{_last_line(text)} (--help lists the flags)") from None
  except (AttributeError, KeyError) as e:  # a locked config refusing an override of a key it does not have
    overrides = [a.split("=", 1)[0] for a in argv[1:] if any(a.startswith(f"--{n}.") for n in names)]
    unknown = [o for o in overrides if o.split(".", 1)[1] not in schema.SCHEMA] or [_last_line(str(e))]
    hint = [line.strip() for line in str(e).splitlines() if line.strip().startswith("Did you mean")]
    raise CommandLineError(f"ConfigError: unknown config key(s) on the command line: {', '.join(unknown)}. "
                           + (hint[0] + " " if hint else "") + _KEYS_HINT) from None


def parse_flags(argv: Sequence[str], flag_values: Optional[flags.FlagValues] = None) -> List[str]:
  """`app.run`'s flags_parser: `check_flags`, or its one line on stderr and exit 2."""
  try:
    return check_flags(argv, flags.FLAGS if flag_values is None else flag_values)
  except CommandLineError as e:
    print(e, file=sys.stderr)
    sys.exit(EXIT_BAD_COMMAND_LINE)
