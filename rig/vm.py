"""VM stage: start QEMU from a QemuCommand, read its serial console, talk QMP and SSH, always stop it.

`RunningVM` is a context manager: QEMU is stopped on normal exit, on an exception and on Ctrl-C, and it is
started with PR_SET_PDEATHSIG so that even a SIGKILLed rig takes its QEMU with it.
"""
from __future__ import annotations

import ctypes
import logging
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pexpect

from rig.config import MachineConfig
from rig.errors import BootError, GuestError
from rig.image import GuestImage, SshKey
from rig.kernel import KernelBuild
from rig.progress import Progress
from rig.qemu import (READY_MARKER, NvmeDrive, QemuCommand, build_command, choose_accel, kernel_cmdline, kvm_usable,
                      machine_cmdline, owns_namespace)

# paramiko logs every refused connection while sshd is still starting as a traceback; the rig reports SSH
# failures itself
logging.getLogger("paramiko").addHandler(logging.NullHandler())
logging.getLogger("paramiko").propagate = False


# how many QEMUs this process started: the CLI says "QEMU stopped" on Ctrl-C only when there was one
started = 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    # runs in the forked child before exec: SIGKILL QEMU if the rig process dies, whatever the cause
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    # (pexpect already gives QEMU its own session on the pty, so a terminal Ctrl-C reaches only the rig,
    # which then stops QEMU cleanly)


@dataclass
class CommandResult:
    exited: int
    stdout: str
    stderr: str


class Console:
    """Reads the serial console in a thread (QEMU blocks if nobody drains it) into console.log and memory."""

    def __init__(self, child: pexpect.spawn, log_path: Path):
        self._child = child
        self._chunks: list[str] = []
        self._lock = threading.Lock()
        # wakes wait_for() as soon as output arrives, so a marker is seen when it is printed, not at the next poll
        self._arrived = threading.Condition(self._lock)
        self._version = 0
        self._log = open(log_path, "a", encoding="utf-8", errors="replace")
        self.closed = threading.Event()
        self._thread = threading.Thread(target=self._pump, name="console", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        while True:
            try:
                data = self._child.read_nonblocking(65536, timeout=0.5)
            except pexpect.TIMEOUT:
                continue
            except (pexpect.EOF, OSError, ValueError):
                break
            data = data.replace("\r\n", "\n").replace("\r", "")
            with self._lock:
                self._chunks.append(data)
                self._log.write(data)
                self._log.flush()
                self._version += 1
                self._arrived.notify_all()
        self.closed.set()
        with self._lock:
            self._arrived.notify_all()

    def text(self) -> str:
        with self._lock:
            if len(self._chunks) > 1:
                self._chunks[:] = ["".join(self._chunks)]
            return self._chunks[0] if self._chunks else ""

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.text().splitlines()[-n:])

    def wait_for(self, needle: str, timeout: float, stop_if=lambda: False) -> bool:
        """True once `needle` is on the console; False at the timeout, or when the console closed or
        `stop_if()` (checked at least every 0.1 s) without it."""
        deadline = time.monotonic() + timeout
        while True:
            seen = self._version
            if needle in self.text():
                return True
            if self.closed.is_set() or stop_if():
                return needle in self.text()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._arrived:
                self._arrived.wait_for(lambda: self._version != seen or self.closed.is_set(), min(remaining, 0.1))

    def close(self) -> None:
        self._thread.join(timeout=5)
        self._log.close()


class RunningVM:
    def __init__(self, cmd: QemuCommand, key: SshKey, workdir: Path, sockdir: Path, boot: int):
        self.cmd = cmd
        self.key = key
        self.workdir = workdir
        self._sockdir = sockdir
        self.boot = boot
        self.started = time.monotonic()
        self.ready_s: float | None = None
        self.boot_timeout_s = 60.0
        self._child: pexpect.spawn | None = None
        self.console: Console | None = None
        self._conn = None

    # ------------------------------------------------------------ lifecycle
    def start(self) -> "RunningVM":
        global started
        started += 1
        self._child = pexpect.spawn(
            self.cmd.argv[0], list(self.cmd.argv[1:]), encoding="utf-8", codec_errors="replace", timeout=None,
            preexec_fn=_die_with_parent, echo=False,
        )
        # pexpect sleeps 0.1 s after closing the pty by default; stop() has already waited for QEMU to exit
        self._child.delayafterclose = self._child.ptyproc.delayafterclose = 0.0
        self.console = Console(self._child, self.workdir / "console.log")
        return self

    def alive(self) -> bool:
        return bool(self._child and self._child.isalive())

    def wait_ready(self, timeout: float, progress: Progress | None = None) -> None:
        assert self.console
        if progress:
            progress.update(f"boot {self.boot}: waiting for the guest (console: {self.workdir / 'console.log'})")
        if not self.console.wait_for(READY_MARKER, timeout, stop_if=lambda: not self.alive()):
            why = "QEMU exited" if not self.alive() else f"no ready marker within {timeout:.0f}s"
            raise BootError(f"guest did not boot: {why}. Last console lines:\n{self.console.tail(25)}\n"
                            f"  console log: {self.workdir / 'console.log'}")
        deadline = time.monotonic() + max(30.0, timeout / 2)
        last_err: Exception | None = None
        while time.monotonic() < deadline and self.alive():
            try:
                # logged in (key exchange and public-key auth done): the guest takes commands
                self.connection().open()
                self.ready_s = time.monotonic() - self.started
                return
            except Exception as e:  # noqa: BLE001 - any SSH failure means "not yet"
                last_err = e
                self._drop_connection()
            time.sleep(0.02)  # sshd was started before the ready marker: it listens a fraction of a second later
        raise BootError(f"guest booted but SSH on 127.0.0.1:{self.cmd.ssh_port} never answered ({last_err}). "
                        f"Last console lines:\n{self.console.tail(25)}")

    def stop(self) -> None:
        self._drop_connection()
        if self._child is not None:
            if self._child.isalive():
                self._qmp_quit()
                deadline = time.monotonic() + 10
                while self._child.isalive() and time.monotonic() < deadline:
                    time.sleep(0.01)
            if self._child.isalive():
                self._child.terminate(force=True)
            try:
                self._child.close(force=True)
            except Exception:  # noqa: BLE001
                pass
        if self.console:
            self.console.close()
        shutil.rmtree(self._sockdir, ignore_errors=True)

    def __enter__(self) -> "RunningVM":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------ QMP
    def qmp(self, command: str, **args):
        from qemu.qmp.legacy import QEMUMonitorProtocol

        mon = QEMUMonitorProtocol(str(self.cmd.qmp_socket))
        try:
            mon.connect()
            return mon.cmd(command, **args)
        finally:
            mon.close()

    def _qmp_quit(self) -> None:
        try:
            self.qmp("quit")
        except Exception:  # noqa: BLE001 - QEMU may already be gone; terminate() follows
            pass

    # ------------------------------------------------------------ SSH (fabric)
    def connection(self):
        if self._conn is None:
            from fabric import Connection

            self._conn = Connection(
                host="127.0.0.1", port=self.cmd.ssh_port, user="root", connect_timeout=10,
                connect_kwargs={"key_filename": str(self.key.private), "look_for_keys": False,
                                "allow_agent": False, "banner_timeout": 30, "auth_timeout": 30},
            )
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001
                pass
            self._conn = None

    def run(self, command: str, timeout: float = 60) -> CommandResult:
        """Run a shell command in the guest. Raises GuestError when the guest does not answer in time."""
        return self.run_with_input(command, b"", timeout)

    def _exec_channel(self, command: str, combine_stderr: bool = False, timeout: float | None = None):
        """`command` started on a new channel of the VM's SSH connection (paramiko's, under fabric's)."""
        conn = self.connection()
        conn.open()
        chan = conn.client.get_transport().open_session()
        chan.set_combine_stderr(combine_stderr)
        chan.settimeout(timeout)
        chan.exec_command(command)
        return chan

    def stream(self, command: str) -> "GuestStream":
        """A long-running guest command on its own SSH channel, spoken to line by line (stdin in, stdout and
        stderr out together): one process serves many requests without an SSH session and an exec each."""
        try:
            chan = self._exec_channel(command, combine_stderr=True)
        except Exception as e:  # paramiko's SSHException, OSError, EOFError
            self._drop_connection()
            raise GuestError(f"SSH to the guest failed ({e.__class__.__name__}: {e})") from e
        return GuestStream(chan, command)

    def run_with_input(self, command: str, data: bytes, timeout: float = 60) -> CommandResult:
        """Run a guest command with `data` as its stdin (e.g. a tar stream into `tar -x`) on one exec channel of
        the VM's SSH connection, stdout and stderr read together as they come. (An SFTP upload would first
        start an sftp-server in the guest, about 1.3 s under TCG; fabric's run() adds its I/O threads.)"""
        deadline = time.monotonic() + timeout
        try:
            chan = self._exec_channel(command, timeout=timeout)
            if data:
                chan.sendall(data)
            chan.shutdown_write()
            out, err = bytearray(), bytearray()
            while not (chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready()):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise socket.timeout(f"no exit after {timeout:.0f}s")
                select.select([chan], [], [], min(left, 1.0))  # readable on stdout or stderr data, or the exit
                while chan.recv_ready():
                    out += chan.recv(65536)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
            status = chan.recv_exit_status()
            chan.close()
        except Exception as e:  # socket.timeout, paramiko's SSHException, OSError, EOFError
            self._drop_connection()
            raise GuestError(f"guest command {command!r} failed ({e.__class__.__name__}: {e})") from e
        return CommandResult(status, out.decode(errors="replace"), err.decode(errors="replace"))

    def put(self, local: Path, remote: str) -> None:
        self.connection().put(str(local), remote)

    def ssh_command(self) -> str:
        return (f"ssh -i {self.key.private} -p {self.cmd.ssh_port} -o StrictHostKeyChecking=no "
                f"-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR root@127.0.0.1")


class GuestStream:
    """See RunningVM.stream. Every failure to talk to the command is a GuestError (the guest stopped answering,
    or the command ended)."""

    def __init__(self, channel, command: str):
        self._chan, self.command = channel, command
        self._buf = b""

    def send_line(self, text: str) -> None:
        self.send((text + "\n").encode())

    def send(self, data: bytes) -> None:
        try:
            self._chan.sendall(data)
        except (OSError, EOFError) as e:
            raise GuestError(f"guest command {self.command!r} no longer reads its input ({e})") from e

    def read_line(self, timeout: float) -> str:
        """The next line of output; GuestError if none comes within `timeout` seconds or the command ended."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise GuestError(f"guest command {self.command!r} gave no answer in {timeout:.0f}s")
            self._chan.settimeout(min(left, 1.0))
            try:
                data = self._chan.recv(65536)
            except socket.timeout:
                continue
            except (OSError, EOFError) as e:
                raise GuestError(f"guest command {self.command!r}: SSH failed ({e})") from e
            if not data:
                status = self._chan.recv_exit_status() if self._chan.exit_status_ready() else "unknown"
                raise GuestError(f"guest command {self.command!r} ended (exit {status})"
                                 + (f": {self._buf.decode(errors='replace')[-300:]}" if self._buf else ""))
            self._buf += data
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode(errors="replace")

    def close(self) -> None:
        try:
            self._chan.close()
        except Exception:  # noqa: BLE001
            pass


class DiskDir:
    """A temporary directory for what a run needs but nobody reads afterwards: root overlays, NVMe backing
    files (hundreds of MB apparent size), the probes' binaries and their upload bundle. Removed by close() (or at
    the end of a `with` block, also on Ctrl-C and SIGTERM) unless `keep` (--keep-disks), so that a run directory
    stays small enough to upload. QEMU must be stopped first."""

    def __init__(self, label: str, keep: bool = False):
        self.path = Path(tempfile.mkdtemp(prefix=f"p2pdma-rig-disks-{label}-"))
        self.keep = keep

    def close(self) -> None:
        if not self.keep:
            shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc) -> None:
        self.close()


def start_vm(
    machine: MachineConfig, kernel: KernelBuild, image: GuestImage, key: SshKey, workdir: Path, *,
    boot: int = 1, progress: Progress | None = None, disks: Path | None = None,
) -> RunningVM:
    """Start QEMU, wait for SSH. Console log and QEMU command line go to workdir; the root overlay and NVMe
    backing files to `disks` (default: workdir). Caller must stop()."""
    return _start(machine, kernel, image, key, workdir, boot, progress, disks, wait=True)


def launch_vm(
    machine: MachineConfig, kernel: KernelBuild, image: GuestImage, key: SshKey, workdir: Path, *,
    boot: int = 1, disks: Path | None = None,
) -> RunningVM:
    """Start QEMU and return at once; the caller waits with wait_ready() (from any thread) and must stop().
    QEMU dies with the thread that started it (PR_SET_PDEATHSIG), so call this from one that lives as long as
    the VM: the rig's main thread."""
    return _start(machine, kernel, image, key, workdir, boot, None, disks, wait=False)


def _start(machine, kernel, image, key, workdir, boot, progress, disks, wait: bool) -> RunningVM:
    qemu = shutil.which(machine.qemu_binary)
    if not qemu:
        raise BootError(f"QEMU binary {machine.qemu_binary!r} not found. Fix: run `make deps` (installs "
                        "qemu-system-x86) or set machine.qemu_binary to an existing QEMU.")
    if not shutil.which("qemu-img"):
        raise BootError("qemu-img not found. Fix: run `make deps` (installs qemu-utils).")
    workdir.mkdir(parents=True, exist_ok=True)
    disks = disks or workdir
    disks.mkdir(parents=True, exist_ok=True)
    overlay = disks / "root.qcow2"
    overlay.unlink(missing_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(image.disk), str(overlay)],
                   check=True)
    drives = [NvmeDrive(disks / f"nvme{i}.img", n) for i, n in enumerate(machine.nvme)]
    for i, d in enumerate(drives):
        if owns_namespace(drives, i) and not d.nvme.latency_ns:
            with open(d.backing, "wb") as f:
                f.truncate(d.nvme.namespace_mb * 1024 * 1024)
    # unix socket paths are limited to 108 bytes, so the QMP socket lives in a short temp dir
    sockdir = Path(tempfile.mkdtemp(prefix="p2pdma-rig-"))
    accel = choose_accel(machine.accel, kvm_usable())
    last: Exception | None = None
    for _attempt in range(3):  # a free port can be taken between free_port() and QEMU's bind
        cmd = build_command(
            machine, accel=accel, bzimage=kernel.bzimage, root_overlay=overlay, nvme=drives, ssh_port=free_port(),
            qmp_socket=sockdir / "qmp.sock", cmdline=kernel_cmdline(key.public_b64, machine_cmdline(machine)),
            qemu_binary=qemu,
        )
        (workdir / "qemu-cmdline.txt").write_text(cmd.shell() + "\n")
        vm = RunningVM(cmd, key, workdir, sockdir, boot).start()
        vm.boot_timeout_s = machine.boot_timeout_s
        if not wait:
            return vm
        try:
            vm.wait_ready(machine.boot_timeout_s, progress)
            return vm
        except BaseException as e:
            text = vm.console.text() if vm.console else ""
            vm.stop()
            if "Could not set up host forwarding rule" in text:
                last = e
                sockdir.mkdir(exist_ok=True)
                continue
            raise
    raise BootError(f"QEMU could not bind a forwarded SSH port three times: {last}")
