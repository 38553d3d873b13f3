"""Errors raised on bad user input. Each message names the file or key and the fix."""


class DataError(ValueError):
  """Bad input data: names the file (or scene) and the problem."""


class ConfigError(ValueError):
  """Bad configuration: names the key and the accepted range."""
