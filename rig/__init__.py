"""p2pdma-rig: QEMU-backed integration tests for Linux userspace P2PDMA."""

__version__ = "0.1.0"
