"""The one exception type a user can cause. The CLI prints its message without a traceback."""


class BassgenError(Exception):
  """A problem with the user's input: the message names the file (or option) and the fix."""
