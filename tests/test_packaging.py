"""What ships around the package (SPEC 5): the Dockerfile, .dockerignore and the systemd unit."""

import fnmatch
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from imgurd.settings import BY_NAME, CREDENTIAL_KEYS, SETTINGS
from tests.daemon import environment

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
UNIT = ROOT / "contrib" / "imgurd.service"
ENV_EXAMPLE = ROOT / "contrib" / "imgurd.env.example"

SECRET_ENVS = {s.env for s in SETTINGS if s.secret} | {BY_NAME["client_id"].env}


# --- tiny parsers


def dockerfile_instructions(path: Path = DOCKERFILE) -> List[Tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: List[Tuple[str, str]] = []
    pending = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):  # comment lines inside a continuation are ignored
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        whole = (pending + stripped).strip()
        pending = ""
        if whole:
            keyword, _, rest = whole.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    assert not pending, "Dockerfile ends inside a continuation line"
    return instructions


def dockerfile(keyword: str) -> List[str]:
    return [rest for kw, rest in dockerfile_instructions() if kw == keyword]


def exec_form(arguments: str) -> List[str]:
    """A JSON-array (exec form) argument list; shell form is split like a shell would."""
    if arguments.startswith("["):
        return json.loads(arguments)
    import shlex

    return shlex.split(arguments)


def unit_file(path: Path = UNIT) -> Dict[str, Dict[str, List[str]]]:
    """{section: {key: [values in order]}}; systemd allows a key more than once."""
    sections: Dict[str, Dict[str, List[str]]] = {}
    current = None
    pending = ""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        stripped = line.strip()
        if not pending and (not stripped or stripped[0] in "#;"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        whole, pending = (pending + stripped).strip(), ""
        if whole.startswith("[") and whole.endswith("]"):
            current = sections.setdefault(whole[1:-1], {})
            continue
        assert current is not None, "line %d is outside any section" % number
        key, equals, value = whole.partition("=")
        assert equals, "line %d is not key=value: %r" % (number, line)
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def dockerignore_patterns() -> List[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip().rstrip("/") for line in lines if line.strip() and not line.strip().startswith("#")]


def dockerignored(path: str) -> bool:
    """Whether the build context leaves ``path`` out (enough of Docker's rules for our file: no "!")."""
    patterns = dockerignore_patterns()
    assert not any(p.startswith("!") for p in patterns), "extend dockerignored() for exceptions"
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        pattern = pattern.lstrip("/")
        for prefix in prefixes:
            if fnmatch.fnmatchcase(prefix, pattern):
                return True
            if pattern.startswith("**/") and fnmatch.fnmatchcase(prefix.split("/")[-1], pattern[3:]):
                return True
    return False


def seconds(text: str) -> float:
    """A systemd time span such as ``45``, ``45s``, ``1min 30s``."""
    units = {"": 1, "s": 1, "sec": 1, "second": 1, "seconds": 1, "m": 60, "min": 60, "minute": 60,
             "minutes": 60, "h": 3600, "hr": 3600, "hour": 3600, "hours": 3600, "ms": 0.001, "msec": 0.001}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", text.strip()):
        total += float(number) * units[unit]
    return total


# --- Dockerfile


def test_docker_base_is_python_311_slim():
    froms = dockerfile("FROM")
    assert froms, "no FROM"
    final_image = froms[-1].split()[0]
    assert final_image.startswith("python:3.11-slim"), final_image


def test_docker_dependencies_come_from_wheels_without_a_compiler():
    runs = " ".join(dockerfile("RUN"))
    installs = re.findall(r"pip install[^&;]*", runs)
    assert installs, "no pip install in the Dockerfile"
    for command in installs:
        assert "--only-binary=:all:" in command, command
        assert "--no-cache-dir" in command, command
    for tool in ("gcc", "build-essential", "libcurl4-openssl-dev", "libssl-dev", "apt-get install"):
        assert tool not in runs, "the image should need no compiler or system packages: %s" % tool


def test_docker_runs_as_a_non_root_user():
    users = dockerfile("USER")
    assert users, "no USER: the service would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users[-1]
    names = [kw for kw, _ in dockerfile_instructions()]
    last_user = len(names) - 1 - names[::-1].index("USER")
    for keyword in ("ENTRYPOINT", "CMD", "HEALTHCHECK"):
        if keyword in names:
            assert names.index(keyword) > last_user, "%s comes before USER" % keyword


def test_docker_exposes_8080_and_stops_with_sigterm():
    exposed = " ".join(dockerfile("EXPOSE")).split()
    assert "8080" in exposed or "8080/tcp" in exposed
    assert dockerfile("STOPSIGNAL") == ["SIGTERM"]


def test_docker_command_listens_on_all_interfaces_unless_told_otherwise():
    entrypoint = exec_form(dockerfile("ENTRYPOINT")[-1]) if dockerfile("ENTRYPOINT") else []
    cmd = exec_form(dockerfile("CMD")[-1]) if dockerfile("CMD") else []
    argv = entrypoint + cmd
    assert argv and os.path.basename(argv[0]) == "imgurd", argv
    # as a variable, not a flag: a flag would beat `docker run -e IMGURD_HOST=::` without a word
    assert "--host" not in argv and "IMGURD_HOST=0.0.0.0" in dockerfile("ENV"), (argv, dockerfile("ENV"))


def healthcheck_argv() -> List[str]:
    checks = dockerfile("HEALTHCHECK")
    assert len(checks) == 1, checks
    options, _, command = checks[0].partition("CMD ")
    assert command, "HEALTHCHECK without CMD"
    return exec_form(command.strip())


def test_docker_healthcheck_uses_python_not_curl():
    argv = healthcheck_argv()
    text = " ".join(argv)
    assert "/healthz" in text
    assert os.path.basename(argv[0]).startswith("python"), argv
    assert "urllib" in text
    assert "curl" not in text and "wget" not in text


def test_docker_healthcheck_command_really_checks_healthz(tmp_path):
    """Run the HEALTHCHECK command (with this interpreter) against a real imgurd, then without one."""
    argv = [sys.executable] + healthcheck_argv()[1:]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    notify_path = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(notify_path)
    listener.settimeout(15)
    env = environment()
    env.update(IMGURD_CLIENT_ID="healthcheck-test", IMGURD_PORT=str(port), NOTIFY_SOCKET=notify_path,
               # the check must not go through a proxy configured for the container
               http_proxy="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9")
    daemon = subprocess.Popen([imgurd_executable(), "--host", "127.0.0.1"], env=env, stderr=subprocess.PIPE)
    try:
        assert listener.recv(1024).startswith(b"READY=1")
        healthy = subprocess.run(argv, env=env, capture_output=True, timeout=30)
        assert healthy.returncode == 0, healthy.stderr.decode()
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.communicate(timeout=30)
        listener.close()
    assert daemon.returncode == 0
    unhealthy = subprocess.run(argv, env=env, capture_output=True, timeout=30)
    assert unhealthy.returncode == 1  # Docker: 1 = unhealthy (2 is reserved)


@pytest.mark.parametrize("port, expected", [(None, "8080"), ("", "8080"), (" 9090 ", "9090"), ("8081", "8081")])
def test_docker_healthcheck_asks_the_port_imgurd_listens_on(monkeypatch, port, expected):
    """IMGURD_PORT unset or empty means imgurd's default port (an empty one in the URL would be port 80)."""
    import urllib.request

    asked = []

    class Opener:
        def open(self, url, timeout):
            asked.append(url)
            return io.BytesIO(b'{"status":"ok"}')

    monkeypatch.setattr(urllib.request, "build_opener", lambda *handlers: Opener())
    if port is None:
        monkeypatch.delenv("IMGURD_PORT", raising=False)
    else:
        monkeypatch.setenv("IMGURD_PORT", port)
    argv = healthcheck_argv()
    assert argv[1] == "-c"
    exec(argv[2], {})
    assert asked == ["http://127.0.0.1:%s/healthz" % expected]


def test_docker_bakes_in_no_secrets():
    for keyword in ("ENV", "ARG", "LABEL"):
        for arguments in dockerfile(keyword):
            for name in SECRET_ENVS:
                assert name not in arguments, "%s %s bakes %s into the image" % (keyword, arguments, name)
    text = DOCKERFILE.read_text(encoding="utf-8")
    for line in text.splitlines():
        if not line.lstrip().startswith("#"):
            assert not re.search(r"--(client-secret|refresh-token|api-token|client-id)\b", line), line


def test_docker_copies_only_what_the_build_needs_and_dockerignore_keeps_it():
    copied = []
    for arguments in dockerfile("COPY"):
        parts = [p for p in exec_form(arguments) if not p.startswith("--")]
        copied.extend(parts[:-1])
    assert copied
    for source in copied:
        assert (ROOT / source).exists(), "COPY %s: no such file" % source
        assert not dockerignored(source), "COPY %s but .dockerignore leaves it out" % source
    # setup.py reads README.md for long_description: it must be in the context
    assert "README.md" in copied and "setup.py" in copied


def test_dockerignore_excludes_repository_clutter_and_secrets():
    assert DOCKERIGNORE.exists()
    for path in (".git", ".git/HEAD", ".venv", ".venv/bin/python", ".pytest_cache", "tests",
                 "imgurd/__pycache__/cli.cpython-311.pyc", "imgurd.egg-info", "bench/out/result.json",
                 "contrib/imgurd.env", ".env", "imgurd.conf"):
        assert dockerignored(path), "%s is sent to the Docker daemon" % path
    for path in ("setup.py", "README.md", "imgurd", "imgurd/cli.py"):
        assert not dockerignored(path), "%s is left out of the build context" % path


def test_dockerignore_names_only_what_exists_or_is_made_locally():
    """A pattern for a file the repository no longer has is a stale reference that misleads."""
    local = {".venv", "venv", "build", "dist", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".coverage",
             "htmlcov", ".env", "imgurd.conf"}  # made by a developer or an operator, never committed
    for pattern in dockerignore_patterns():
        if any(c in pattern for c in "*?[") or pattern in local:
            continue
        assert (ROOT / pattern).exists(), ".dockerignore names %s, which does not exist" % pattern


def test_docker_run_example_publishes_the_exposed_port_on_loopback():
    """The comment's `docker run -p` publishes the port the image listens on, on loopback only (as the
    documentation does): imgurd has no access control unless api_token is set."""
    published = re.findall(r"^#.*docker run .*-p (\S+)", DOCKERFILE.read_text(encoding="utf-8"), re.MULTILINE)
    assert published
    exposed = " ".join(dockerfile("EXPOSE")).split()[0].split("/")[0]
    for mapping in published:
        assert mapping == "127.0.0.1:%s:%s" % (exposed, exposed), mapping


# --- systemd unit


@pytest.fixture(scope="module")
def unit():
    return unit_file()


def only(unit, section: str, key: str) -> str:
    values = unit.get(section, {}).get(key)
    assert values, "[%s] %s= is missing" % (section, key)
    return values[-1]


def test_unit_is_type_notify_with_dynamic_user(unit):
    assert only(unit, "Service", "Type") == "notify"
    assert only(unit, "Service", "NotifyAccess") == "main"
    assert only(unit, "Service", "DynamicUser") == "yes"
    assert "User" not in unit["Service"] and "Group" not in unit["Service"]
    assert only(unit, "Install", "WantedBy") == "multi-user.target"
    assert "network-online.target" in only(unit, "Unit", "After")


HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "ProtectClock": "yes",
    "ProtectHostname": "yes",
    "RestrictNamespaces": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "SystemCallArchitectures": "native",
    "UMask": "0077",
}


@pytest.mark.parametrize("key", sorted(HARDENING))
def test_unit_hardening(unit, key):
    assert only(unit, "Service", key) == HARDENING[key]


def test_unit_restricts_address_families_and_system_calls(unit):
    # AF_NETLINK: the guard reads this host's own addresses over netlink (local_addresses.py)
    assert set(only(unit, "Service", "RestrictAddressFamilies").split()) == {"AF_INET", "AF_INET6", "AF_UNIX",
                                                                              "AF_NETLINK"}
    filters = unit["Service"]["SystemCallFilter"]
    assert filters[0] == "@system-service"
    assert all(f == "@system-service" or f.startswith("~") for f in filters), filters


def test_unit_runs_imgurd_with_the_config_file(unit):
    argv = only(unit, "Service", "ExecStart").split()
    assert argv[0].startswith("/") and argv[0].endswith("/bin/imgurd"), argv
    assert argv[argv.index("--config") + 1] == "/etc/imgurd/imgurd.conf", argv
    assert "--host" not in argv and "--client-id" not in argv  # settings live in the files


def test_unit_passes_secrets_as_credentials_and_an_optional_environment_file(unit):
    assert only(unit, "Service", "EnvironmentFile") == "-/etc/imgurd/imgurd.env"
    # each credential is named as the key imgurd reads from $CREDENTIALS_DIRECTORY, and is looked up by a
    # credential name (not an absolute path), which systemd skips when missing: anonymous set-ups need none
    loaded = dict(value.split(":", 1) for value in unit["Service"].get("LoadCredential", []))
    assert set(loaded) == set(CREDENTIAL_KEYS)
    for key, source in loaded.items():
        assert source == "imgurd." + key, (key, source)
    for key in ("SetCredential", "SetCredentialEncrypted"):  # never a secret in the unit itself
        assert key not in unit["Service"]
    for value in unit["Service"].get("Environment", []):
        for name in SECRET_ENVS:
            assert name not in value, "secret %s set in the unit itself" % name


def test_unit_stops_gracefully_and_restarts_on_failure(unit):
    assert only(unit, "Service", "KillSignal") == "SIGTERM"
    assert seconds(only(unit, "Service", "TimeoutStopSec")) > BY_NAME["shutdown_timeout"].default
    assert only(unit, "Service", "Restart") == "on-failure"
    # exit status 2 is a configuration error (SPEC 4): restarting cannot fix it
    assert "2" in only(unit, "Service", "RestartPreventExitStatus").split()


def test_env_example_sets_only_known_keys():
    known = {s.env for s in SETTINGS}
    names = []
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^#?\s*(IMGURD_[A-Z_]+)=", line)
        if match:
            names.append(match.group(1))
            if not line.startswith("#"):
                assert not line.startswith("export ") and '"' not in line and "'" not in line, line
    assert BY_NAME["client_id"].env in names
    unknown = sorted(set(names) - known)
    assert not unknown, "unknown keys in %s: %s" % (ENV_EXAMPLE.name, unknown)


def imgurd_executable() -> str:
    beside = Path(sys.executable).parent / "imgurd"
    found = str(beside) if beside.exists() else shutil.which("imgurd")
    assert found, "install the package first: pip install -e '.[test]'"
    return found


@pytest.fixture
def runnable_unit(tmp_path):
    """A copy of the unit whose ExecStart points at the imgurd installed here."""
    text = UNIT.read_text(encoding="utf-8")
    argv0 = only(unit_file(), "Service", "ExecStart").split()[0]
    copy = tmp_path / "imgurd.service"
    copy.write_text(text.replace("ExecStart=%s " % argv0, "ExecStart=%s " % imgurd_executable()), encoding="utf-8")
    return copy


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_systemd_analyze_verify(runnable_unit):
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(runnable_unit)],
                            capture_output=True, text=True, timeout=120)
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if "imgurd" in line]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_systemd_analyze_security_rates_the_unit_ok(runnable_unit):
    result = subprocess.run(["systemd-analyze", "security", "--no-pager", "--offline=yes", str(runnable_unit)],
                            capture_output=True, text=True, timeout=120)
    level = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
    if level is None:
        pytest.skip("this systemd-analyze cannot rate unit files offline: %s" % result.stderr.strip()[:200])
    assert float(level.group(1)) <= 2.0, result.stdout


# --- documentation: README.md is the front door, the reference is in docs/

README = ROOT / "README.md"
CI_RUN = ROOT / ".ci" / "run"


def documentation() -> List[Path]:
    return [README] + sorted((ROOT / "docs").glob("*.md"))


def test_documentation_stands_alone():
    """A clone holds only this repository: no page may send readers elsewhere or speak of papers they lack."""
    for path in documentation():
        text = path.read_text(encoding="utf-8").lower()
        for phrase in ("../shared", "spec.md", "imgur-api.md", "the brief", "the spec"):
            assert phrase not in text, "%s mentions %r" % (path.relative_to(ROOT), phrase)


def _steps(command: str) -> List[List[str]]:
    """A shell command's ``&&`` steps as words, without pip's output options (CI runs pip quietly)."""
    import shlex

    quiet = {"--quiet", "-q", "--disable-pip-version-check"}
    return [[word for word in shlex.split(step) if word not in quiet] for step in command.split("&&")]


def test_readme_test_command_is_what_ci_runs_and_is_given_once():
    readme = README.read_text(encoding="utf-8")
    commands = [line for line in readme.splitlines() if line.endswith("-m pytest")]
    assert len(commands) == 1, "the README should give the test command once: %s" % commands
    ci_steps = [step for line in CI_RUN.read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.startswith(("#", "set ", "cd ")) for step in _steps(line)]
    readme_steps = _steps(commands[0])
    remaining = iter(ci_steps)  # the README's steps, in order, among what CI runs (CI may run more, e.g. a linter)
    assert all(step in remaining for step in readme_steps), "README: %s; .ci/run: %s" % (readme_steps, ci_steps)


def test_readme_quick_start_installs_and_starts_the_service():
    readme = README.read_text(encoding="utf-8")
    assert "python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/imgurd --client-id " in readme
    # the front door: reference material goes in docs/ (the configuration table, 36 lines, is there by SPEC 5)
    assert len(readme.splitlines()) <= 240, "README.md is the front door: reference material goes in docs/"


def test_documentation_names_the_config_path_the_unit_uses(unit):
    config = re.search(r"--config (\S+)", only(unit, "Service", "ExecStart")).group(1)
    for path in (README, ROOT / "docs" / "configuration.md", ROOT / "docs" / "operations.md"):
        text = path.read_text(encoding="utf-8")
        assert config in text, "%s never names %s" % (path.relative_to(ROOT), config)
    for path in documentation():
        assert "/etc/imgurd.conf" not in path.read_text(encoding="utf-8"), path.relative_to(ROOT)


def test_documentation_links_point_to_files_that_exist():
    broken = []
    for path in documentation():
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text(encoding="utf-8")):
            if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # a web address, or a section of the same page
            linked = (path.parent / target.split("#")[0]).resolve()
            if linked.exists():
                continue
            broken.append("%s -> %s" % (path.relative_to(ROOT), target))
    assert not broken, broken
