"""The processes an engine start leaves behind, and how they end with llmgen.

vLLM V1 runs its engine in subprocesses (EngineCore and its workers; on CPU started with the
``spawn`` method, elsewhere possibly ``fork``). Every way llmgen ends must end them:

- a clean close: the backend shuts its engine down, then :func:`reap` stops anything left;
- Ctrl-C and SIGTERM: the exception unwinds through the engine start (:func:`engine_start`) or
  the command, and :func:`reap` runs (also at exit);
- kill -9 of llmgen runs no code in llmgen: the kernel kills the engine processes instead
  (``PR_SET_PDEATHSIG``), which each one sets for itself as it starts (:func:`adopt_engine_child`:
  at fork, or for a spawned one when it imports ``llmgen.cli.main`` as its ``__mp_main__``).

The engine processes also leave the terminal's process group, so Ctrl-C reaches llmgen alone (not
EngineCore, which would print its tracebacks and go on loading the model) and llmgen stops them.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

#: Set (to llmgen's pid) while an engine starts: a process started then, whose parent has that pid,
#: is an engine process.
ENGINE_PARENT_ENV = "LLMGEN_ENGINE_PARENT"
PR_SET_PDEATHSIG = 1

_STARTING = False
_FORK_PARENT = 0
_ENGINE_PIDS: set[int] = set()  # started by engine starts and not reaped yet


def _become_engine_child() -> None:
    """Die with the parent (whatever kills it), and leave its process group."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getpgrp() != os.getpid():
            os.setpgid(0, 0)
    except (OSError, AttributeError):
        return


def adopt_engine_child() -> None:
    """In a process spawned while an engine starts (its parent is the pid in
    ``$LLMGEN_ENGINE_PARENT``): become an engine child. Does nothing anywhere else."""
    parent = os.environ.get(ENGINE_PARENT_ENV)
    if parent and parent == str(os.getppid()):
        _become_engine_child()
        if str(os.getppid()) != parent:  # the parent died before the death signal was armed
            os._exit(1)


def _before_fork() -> None:
    global _FORK_PARENT
    _FORK_PARENT = os.getpid()


def _after_fork_in_child() -> None:
    if _STARTING:
        _become_engine_child()
        if os.getppid() != _FORK_PARENT:
            os._exit(1)


os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)


def children() -> set[int]:
    """The pids of this process's descendants."""
    import psutil

    try:
        return {c.pid for c in psutil.Process().children(recursive=True)}
    except psutil.Error:
        return set()


@contextmanager
def engine_start() -> Iterator[None]:
    """Around an engine start: the processes it starts are engine children, and if the start does
    not finish (Ctrl-C, SIGTERM, an error) they are stopped before the exception goes on."""
    global _STARTING
    before = children()
    old = os.environ.get(ENGINE_PARENT_ENV)
    os.environ[ENGINE_PARENT_ENV] = str(os.getpid())
    _STARTING = True
    done = False
    try:
        yield
        done = True
    finally:
        _STARTING = False
        if old is None:
            os.environ.pop(ENGINE_PARENT_ENV, None)
        else:
            os.environ[ENGINE_PARENT_ENV] = old
        new = children() - before
        _ENGINE_PIDS.update(new)
        if not done:
            reap(new, grace=1.0)


def reap(pids: set[int] | None = None, grace: float = 2.0) -> None:
    """End the engine processes ``pids`` (default: every one not reaped yet) and their children:
    SIGTERM, then SIGKILL to what still runs after ``grace`` seconds."""
    import psutil

    pids = set(_ENGINE_PIDS if pids is None else pids)
    procs = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            procs += [proc, *proc.children(recursive=True)]
        except psutil.Error:
            continue
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for proc in procs:
            try:
                proc.send_signal(sig)
            except psutil.Error:
                pass
        _gone, procs = psutil.wait_procs(procs, timeout=grace)
        if not procs:
            break
    _ENGINE_PIDS.difference_update(pids)


def reap_leftovers(grace: float = 5.0) -> None:
    """After the last engine shut down: stop whatever its start left running."""
    reap(_ENGINE_PIDS & children(), grace=grace)


atexit.register(reap)


def forward_signals_to_main_thread() -> None:
    """Make Ctrl-C and SIGTERM interrupt the main thread wherever it waits.

    A signal sent to the process lands on any thread that does not block it (torch's, a
    tokenizer's); Python only sets a flag then, and a main thread blocked in C (vLLM waiting for its
    engine in ``zmq_poll`` for up to 10 minutes, whose retry on EINTR can drop the interrupt) never
    raises it: Ctrl-C seemed ignored. Python writes every signal it receives to the wakeup fd; a
    helper thread reads it and, unless the main thread's handler ran, sends the signal again to
    the main thread itself. The SIGINT handler raises once per second at most, so the copy never
    interrupts the unwinding of the first. Where the interrupt is lost all the same (pyzmq's retry
    on EINTR drops an exception a handler raised), the helper ends the run itself after
    ``HARD_EXIT_AFTER`` seconds: the hooks (:func:`on_hard_exit`: run folders released), the
    engine processes reaped, one line, ``exit_status(signum)``. Call from the main thread, before
    any other wakeup fd.
    """
    if threading.current_thread() is not threading.main_thread() or _RELAY:
        return
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    try:
        if signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False) != -1:
            signal.set_wakeup_fd(-1)  # someone else's: leave it alone
            reader.close()
            writer.close()
            return
    except ValueError:
        reader.close()
        writer.close()
        return
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)
    main = threading.main_thread().ident

    def relay() -> None:
        while True:
            try:
                data = reader.recv(64)
            except OSError:
                return
            for signum in set(data) & {signal.SIGINT, signal.SIGTERM}:
                seen = _HANDLED.get(signum, 0.0)
                time.sleep(0.05)  # the main thread may be handling it right now
                if _HANDLED.get(signum, 0.0) == seen and time.monotonic() - seen >= 1.0:
                    try:
                        signal.pthread_kill(main, signum)
                    except (OSError, ProcessLookupError):
                        return
                threading.Timer(HARD_EXIT_AFTER, _hard_exit, (signum,)).start()

    _RELAY.extend((reader, writer))  # the sockets live as long as the process: the fd must stay ours
    threading.Thread(target=relay, name="llmgen-signals", daemon=True).start()


HARD_EXIT_AFTER = 5.0
_RELAY: list[socket.socket] = []
_HOOKS: list = []
_UNWOUND: list[bool] = []
_HANDLED: dict[int, float] = {}  # signal -> when the main thread's handler last ran


def handled(signum: int) -> bool:
    """Record that the main thread's handler for ``signum`` runs now; False when it already ran
    within the last second (the relay's copy of the same signal: not raised twice)."""
    now = time.monotonic()
    last = _HANDLED.get(signum)
    _HANDLED[signum] = now
    return last is None or now - last >= 1.0


def _on_sigint(signum, frame) -> None:
    if handled(signum):
        raise KeyboardInterrupt


def on_hard_exit(hook) -> None:
    """``hook()`` runs before a hard exit (:func:`forward_signals_to_main_thread`)."""
    _HOOKS.append(hook)


def mark_unwound() -> None:
    """The main thread has unwound from an interrupt: no hard exit is needed."""
    _UNWOUND.append(True)


def exit_status(signum: int) -> int:
    """The shell's status for a process ended by ``signum``: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + int(signum)


def _hard_exit(signum: int) -> None:
    if _UNWOUND:
        return
    import sys

    for hook in _HOOKS:
        try:
            hook()
        except Exception:
            pass
    reap(grace=1.0)
    print(f"error: {'terminated' if signum == signal.SIGTERM else 'interrupted'}", file=sys.stderr, flush=True)
    os._exit(exit_status(signum))
