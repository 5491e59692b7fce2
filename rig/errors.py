"""Errors the CLI turns into a short message and an exit code.

Exit codes (README "Exit codes"): 0 all cases passed (XFAIL counts as passed), 1 a case failed,
2 harness or configuration error, 3 the guest kernel crashed.
"""

EXIT_OK = 0
EXIT_CASE_FAILED = 1
EXIT_HARNESS = 2
EXIT_GUEST_CRASH = 3


class RigError(Exception):
    """A failure of the rig or its input: printed as one short message, exit code 2."""

    exit_code = EXIT_HARNESS


class ConfigError(RigError):
    pass


class BuildError(RigError):
    pass


class BootError(RigError):
    pass


class GuestError(RigError):
    """The guest stopped answering (SSH lost, QEMU exited)."""
