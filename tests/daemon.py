"""Start the installed ``imgurd`` on a port it picks itself (``--port 0``), and learn that port.

Shared by the tests (tests/helpers.py) and the bench (bench/children.py), so the standard library
only. A port found by binding port 0 and closing it again can be taken by someone else before the
child binds it; a port the child picks cannot. The port is read from the child's listening socket in
/proc (Linux) rather than from its log, so it is found at any ``--log-level``, in either log format,
with any version of imgurd, and for other servers started on port 0 (the bench's reference relay).
"""

import os
import shutil
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence


def installed_command(name: str) -> str:
    """The console script ``name`` of this environment (the one next to the running python if not on PATH)."""
    found = shutil.which(name) or os.path.join(os.path.dirname(sys.executable), name)
    assert os.path.exists(found), "install the package first: pip install -e '.[test]'"
    return found


def imgurd_command() -> str:
    return installed_command("imgurd")


def environment(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """This process's environment without its IMGURD_ settings (they would override the test's), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGURD_")}
    env.update(extra or {})
    return env


def spawn_imgurd(args: Sequence[str], env: Optional[Dict[str, str]] = None, command: Optional[List[str]] = None,
                 **popen: Any) -> subprocess.Popen:
    """``imgurd --port 0 ARGS`` (or ``COMMAND --port 0 ARGS``) in a child process; ``popen`` goes to Popen."""
    return subprocess.Popen([*(command or [imgurd_command()]), "--port", "0", *args], env=environment(env), **popen)


def listening_port(pid: int) -> Optional[int]:
    """The TCP port process ``pid`` listens on, or None yet: its sockets looked up in the kernel's tables."""
    inodes = set()
    try:
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            except OSError:  # closed meanwhile
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    except OSError:  # the process is gone
        return None
    for table in ("tcp", "tcp6"):
        try:
            with open("/proc/%d/net/%s" % (pid, table)) as handle:
                next(handle)  # the column names
                for line in handle:
                    fields = line.split()  # sl local_address rem_address st ... inode
                    if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                        return int(fields[1].rsplit(":", 1)[1], 16)
        except (OSError, StopIteration):
            continue
    return None


def wait_listening(process: subprocess.Popen, timeout: float) -> Optional[int]:
    """The port ``process`` listens on, as soon as it does; None if it exits or ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while True:
        port = listening_port(process.pid)
        if port is not None:
            return port
        if process.poll() is not None or time.monotonic() > deadline:
            return None
        time.sleep(0.02)
