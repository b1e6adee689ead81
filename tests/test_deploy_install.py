"""deploy/install.sh run for real into temporary roots (`--root DIR`): the layout, the installed
daemon serving a signed child from that layout, idempotence, failure without leftovers,
uninstall and purge, and the clear refusals. shellcheck runs on every shipped shell script.

Run: pytest tests/test_deploy_install.py -q     (about a minute: a wheel build and a few venvs)

To save the build, the tests install a wheel of this checkout (`--wheel`), built once per run
(BULLET_TEST_WHEEL=FILE reuses one). The installer's hooks used here: BULLETD_OS_RELEASE and
BULLETD_MACHINE (pretend to be another system) and BULLETD_INSTALL_FAIL_AFTER=venv|stage (fail
after that step, to prove a failed install leaves nothing behind).
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from _deploy_util import DEPLOY, INSTALL, ROOT, UNIT, stop_daemon

pytestmark = pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="needs a Debian system (dpkg-query)")


def run_install(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    e.pop("PYTHONPATH", None)
    e.update(env or {})
    return subprocess.run(["bash", str(INSTALL), "--python", sys.executable, *args],
                          capture_output=True, text=True, env=e, timeout=timeout)


def files_under(root: Path) -> dict[str, tuple]:
    """path -> (kind, size, mode, mtime_ns) for every entry (the venv's contents summarised by
    its own directory entry, whose inode changes when it is replaced)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        if rel.endswith("venv"):
            st = os.stat(dirpath)
            out[rel] = ("venv", st.st_ino, st.st_mtime_ns)
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            is_dir = p.is_dir() and not p.is_symlink()
            # A folder's own mtime changes when a staging folder comes and goes inside it; its
            # entries are compared one by one instead.
            out[os.path.relpath(p, root)] = (p.is_symlink(), is_dir, st.st_mode,
                                             None if is_dir else st.st_size, None if is_dir else st.st_mtime_ns)
    return out


def leftovers(root: Path) -> list[str]:
    return [p for p in files_under(root) if ".bulletd.new" in p or ".bulletd.stage" in p
            or ".bulletd.old" in p or ".bulletd.lock" in p or p.endswith(".tmp")]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    given = os.environ.get("BULLET_TEST_WHEEL")
    if given:
        return Path(given)
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)]
    if importlib.util.find_spec("scikit_build_core") and importlib.util.find_spec("pybind11"):
        cmd.insert(4, "--no-build-isolation")        # reuse the installed build tools
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"building the wheel failed:\n{r.stdout}\n{r.stderr}"
    (whl,) = out.glob("bullet_os-*.whl")
    return whl


@pytest.fixture(scope="module")
def installed(tmp_path_factory, wheel) -> Path:
    root = tmp_path_factory.mktemp("root")
    r = run_install("--root", str(root), "--wheel", str(wheel))
    assert r.returncode == 0, f"install failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    (root / "stdout.txt").write_text(r.stdout)
    return root


def venv_python(root: Path) -> str:
    return str(root / "opt/bulletd/venv/bin/python")


# ---------------------------------------------------------------------------------------- layout

def test_install_lays_out_the_whole_tree(installed):
    r = installed
    for tool in ("python", "bulletd", "bulletd-cli", "bullet"):
        assert (r / "opt/bulletd/venv/bin" / tool).exists(), tool
    # The venv was built in a staging folder; its scripts must name the final path.
    assert (r / "opt/bulletd/venv/bin/bulletd-cli").read_text().splitlines()[0] == "#!/opt/bulletd/venv/bin/python"
    assert ".bulletd.new" not in (r / "opt/bulletd/venv/pyvenv.cfg").read_text()
    cfg = r / "etc/bulletd/bulletd.yaml"
    assert cfg.stat().st_mode & 0o777 == 0o640
    assert (r / "etc/bulletd/bulletd.yaml.example").read_text() == cfg.read_text()
    assert (r / "etc/bulletd").stat().st_mode & 0o777 == 0o750
    assert (r / "etc/bulletd/trusted_keys").is_dir()
    assert (r / "var/lib/bulletd/models").is_dir()
    assert (r / "etc/systemd/system/bulletd.service").read_text() == UNIT.read_text()
    assert os.readlink(r / "etc/systemd/system/multi-user.target.wants/bulletd.service") == \
        "/etc/systemd/system/bulletd.service"
    for tool in ("bulletd-cli", "bullet"):
        assert os.readlink(r / "usr/local/bin" / tool) == f"/opt/bulletd/venv/bin/{tool}"
    log = (r / "opt/bulletd/install.log").read_text()
    assert "skipped (--root): getent group bulletd >/dev/null || groupadd --system bulletd; " in log
    assert "skipped (--root): systemctl daemon-reload; systemctl enable bulletd.service" in log
    assert leftovers(r) == []


def test_root_install_leaves_the_first_boot_every_command_it_needs(installed):
    """Without --owner-ids the image's files are not yet root:bulletd / bulletd:bulletd: the first
    boot must create the user and group AND give them the files; both are printed and scripted."""
    out = (installed / "stdout.txt").read_text()
    script = installed / "opt/bulletd/first-boot.sh"
    assert script.stat().st_mode & 0o777 == 0o755
    lines = script.read_text().splitlines()
    assert lines[0] == "#!/bin/sh" and "set -e" in lines
    cmds = [x for x in lines if x and not x.startswith("#") and x != "set -e"]
    assert cmds == [
        "getent group bulletd >/dev/null || groupadd --system bulletd",
        "getent passwd bulletd >/dev/null || useradd --system --gid bulletd --home-dir /var/lib/bulletd "
        "--no-create-home --shell /usr/sbin/nologin --comment 'Bullet OS daemon' bulletd",
        "chown root:bulletd /etc/bulletd /etc/bulletd/trusted_keys /etc/bulletd/bulletd.yaml",
        "chown -R bulletd:bulletd /var/lib/bulletd"]
    for c in cmds:   # printed too, in the one "skipped" line
        assert c in out
    assert subprocess.run(["sh", "-n", str(script)]).returncode == 0
    # every path the script gives away exists in the image
    for p in ("etc/bulletd", "etc/bulletd/trusted_keys", "etc/bulletd/bulletd.yaml", "var/lib/bulletd"):
        assert (installed / p).exists(), p


def test_refuses_bad_owner_ids(tmp_path):
    for ids, msg in (("990", "expected UID:GID, two numbers"), ("a:b", "expected UID:GID"),
                     ("990:990:1", "expected UID:GID")):
        r = run_install("--root", str(tmp_path / "r"), "--owner-ids", ids)
        assert r.returncode == 1 and msg in r.stderr, r.stderr
    r = run_install("--owner-ids", "990:990")
    assert r.returncode == 1 and "--owner-ids goes with --root or --no-user" in r.stderr


def test_shipped_children_are_installed_with_their_signatures(installed):
    shipped = sorted(p.name for p in (ROOT / "child_models").glob("*.bullet"))
    models = installed / "var/lib/bulletd/models"
    for name in shipped:
        assert (models / name).read_bytes() == (ROOT / "child_models" / name).read_bytes()
        assert (models / (name + ".sig")).exists()
    keys = sorted(p.name for p in (ROOT / "child_models").glob("**/*.pem"))
    assert sorted(p.name for p in (installed / "etc/bulletd/trusted_keys").glob("*.pem")) == keys
    assert f"models in {installed}/var/lib/bulletd/models: {len(shipped)} shipped" in \
        (installed / "stdout.txt").read_text()


def test_installed_daemon_accepts_the_installed_config(installed):
    r = subprocess.run([venv_python(installed), "-I", "-m", "bulletd.daemon.main", "--check-config",
                        "--config", str(installed / "etc/bulletd/bulletd.yaml")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    cfg = json.loads(r.stdout)
    assert cfg["model_dir"] == "/var/lib/bulletd/models"
    assert cfg["trust"]["keys"] == ["/etc/bulletd/trusted_keys"]
    assert cfg["socket"]["path"] == "/run/bulletd/bulletd.sock" and cfg["socket"]["mode"] == 0o660
    assert cfg["mqtt"]["host"] == "" and cfg["trust"]["allow_unsigned"] is False


def test_installed_daemon_serves_a_signed_child_from_the_layout(installed, tmp_path):
    """The installed venv's bulletd, with the installed config (paths moved into the root), loads
    a child signed by a key in the installed trust store and generates through bulletd-cli."""
    from bulletd.format.synth import write_random_lm
    from bulletd.signing import generate_keypair, sign_file
    models, trust = installed / "var/lib/bulletd/models", installed / "etc/bulletd/trusted_keys"
    priv, pub = generate_keypair("deploytest", tmp_path / "keys")
    shutil.copy(pub, trust / pub.name)
    arch = dict(dim=64, n_layers=2, n_heads=2, n_kv_heads=2, hidden_dim=128, vocab_size=320, max_seq_len=128)
    child = write_random_lm(models / "tinytest.bullet", arch, seed=3, name="tinytest")
    sign_file(child, priv, name="tinytest", version="1.0.0")
    sock = tmp_path / "bulletd.sock"
    log = open(tmp_path / "daemon.log", "w")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NOTIFY_SOCKET")}
    d = subprocess.Popen([venv_python(installed), "-I", "-m", "bulletd.daemon.main",
                          "--config", str(installed / "etc/bulletd/bulletd.yaml"), "--models", str(models),
                          "--trust", str(trust), "--socket", str(sock)],
                         stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 60
        while not sock.exists():
            assert d.poll() is None, f"daemon exited {d.returncode}: {(tmp_path / 'daemon.log').read_text()}"
            assert time.monotonic() < deadline, "no control socket after 60 s"
            time.sleep(0.1)
        cli = [venv_python(installed), "-I", "-m", "bulletd.cli", "--socket", str(sock)]
        out = subprocess.run(cli + ["list"], capture_output=True, text=True, timeout=60, env=env)
        assert out.returncode == 0 and "tinytest" in out.stdout, out.stdout + out.stderr
        out = subprocess.run(cli + ["--json", "generate", "hello", "--child", "tinytest", "--max-tokens", "8",
                                    "--temperature", "0", "--no-stream"],
                             capture_output=True, text=True, timeout=120, env=env)
        assert out.returncode == 0, out.stdout + out.stderr
        reply = json.loads(out.stdout)
        assert (reply["ok"], reply["child"], reply["tokens"], reply["finish_reason"]) == \
            (True, "tinytest", 8, "length"), reply
    finally:
        stop_daemon(d, log)
        for f in (child, Path(str(child) + ".sig"), trust / pub.name):
            f.unlink(missing_ok=True)
    log_text = (tmp_path / "daemon.log").read_text()
    assert d.returncode == 0, log_text
    assert "loaded child tinytest v1.0.0" in log_text and "signer" in log_text, log_text


# ------------------------------------------------------------------ idempotence and failures

def test_reinstall_keeps_the_users_config_and_models(installed, wheel):
    cfg = installed / "etc/bulletd/bulletd.yaml"
    cfg.write_text(cfg.read_text() + "# edited by the admin\n")
    extra = installed / "var/lib/bulletd/models/from-ota.bullet"
    extra.write_bytes(b"not touched by the installer")
    venv_ino = (installed / "opt/bulletd/venv").stat().st_ino
    r = run_install("--root", str(installed), "--wheel", str(wheel))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "kept the existing" in r.stdout
    assert cfg.read_text().endswith("# edited by the admin\n")
    assert extra.read_bytes() == b"not touched by the installer"
    assert (installed / "opt/bulletd/venv").stat().st_ino != venv_ino      # the program was replaced
    assert leftovers(installed) == []
    extra.unlink()


def test_owner_ids_give_the_image_its_documented_ownership(installed, wheel):
    """--owner-ids UID:GID (the ids bulletd has in the image): /etc/bulletd, trusted_keys/ and
    bulletd.yaml root:GID, /var/lib/bulletd UID:GID; the first boot only creates the user."""
    if os.geteuid() != 0:
        r = run_install("--root", str(installed), "--wheel", str(wheel), "--owner-ids", "4242:4243")
        assert r.returncode == 1 and "--owner-ids needs root" in r.stderr
        return
    r = run_install("--root", str(installed), "--wheel", str(wheel), "--owner-ids", "4242:4243")
    assert r.returncode == 0, r.stdout + r.stderr

    def owner(p):
        st = (installed / p).stat()
        return st.st_uid, st.st_gid, st.st_mode & 0o777
    assert owner("etc/bulletd") == (0, 4243, 0o750)
    assert owner("etc/bulletd/trusted_keys") == (0, 4243, 0o750)
    assert owner("etc/bulletd/bulletd.yaml") == (0, 4243, 0o640)
    for p in [installed / "var/lib/bulletd", *(installed / "var/lib/bulletd").rglob("*")]:
        assert (p.stat().st_uid, p.stat().st_gid) == (4242, 4243), p
    cmds = (installed / "opt/bulletd/first-boot.sh").read_text()
    assert "groupadd --system --gid 4243 bulletd" in cmds and "useradd --system --uid 4242 --gid bulletd" in cmds
    assert "chown" not in cmds
    assert leftovers(installed) == []


def test_failed_upgrade_leaves_the_previous_install_untouched(installed, wheel):
    # 'stage' is the last step before anything moves: a new venv and a staged /etc exist then.
    step = "stage"
    before = files_under(installed)
    r = run_install("--root", str(installed), "--wheel", str(wheel), env={"BULLETD_INSTALL_FAIL_AFTER": step})
    assert r.returncode != 0
    assert f"forced failure after step '{step}'" in r.stderr
    assert "removed the staging folders, the previous state is unchanged" in r.stderr
    assert files_under(installed) == before


def test_failed_first_install_leaves_no_files(tmp_path, wheel):
    # A real failure: pip cannot install a broken wheel, after the venv has been made.
    bad = tmp_path / wheel.name
    bad.write_bytes(b"PK\x03\x04 this is not a wheel")
    root = tmp_path / "root"
    r = run_install("--root", str(root), "--wheel", str(bad))
    assert r.returncode != 0
    assert f"pip install {bad} failed" in r.stderr, r.stderr
    assert "removed the staging folders" in r.stderr
    files = [p for p, meta in files_under(root).items() if not meta[1]]    # anything but folders
    assert files == [], files


def test_ctrl_c_during_the_venv_build_leaves_no_files(tmp_path, wheel):
    # Ctrl-C reaches the whole foreground process group: bash and the pip it is waiting for.
    root = tmp_path / "root"
    e = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # A terminal delivers Ctrl-C; a test run started in the background by a shell without job
    # control inherits SIGINT ignored, and bash cannot trap a signal ignored on entry: the
    # installer starts with SIGINT's default, as from a terminal.
    p = subprocess.Popen(["bash", str(INSTALL), "--python", sys.executable, "--root", str(root),
                          "--wheel", str(wheel)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=e, start_new_session=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not (root / "opt/.bulletd.new/venv/bin/python").exists():
        assert p.poll() is None, p.communicate()
        assert time.monotonic() < deadline, "the staging venv never appeared"
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode != 0, out
    assert "removed the staging folders, the previous state is unchanged" in err, err
    files = [f for f, meta in files_under(root).items() if not meta[1]]
    assert files == [], files


def test_refuses_to_install_into_the_system_without_root():
    setpriv = shutil.which("setpriv")
    if setpriv is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv (util-linux) to run the installer as another user")
    # A copy user nobody can read (pytest's own temporary folders are private to root).
    folder = Path(tempfile.mkdtemp(prefix="bulletd-install-", dir="/tmp"))
    try:
        folder.chmod(0o755)
        script = folder / "install.sh"
        shutil.copy(INSTALL, script)
        script.chmod(0o755)
        r = subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "bash", str(script)],
                           capture_output=True, text=True, timeout=60, cwd="/")
    finally:
        shutil.rmtree(folder)
    assert r.returncode != 0
    assert "installing into / needs root: sudo" in r.stderr, r.stderr


# -------------------------------------------------------------------------------- refusals

def _fake_checkout(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "deploy").mkdir(parents=True)
    (src / "bulletd").mkdir()
    (src / "child_models").mkdir()
    shutil.copy(ROOT / "pyproject.toml", src / "pyproject.toml")
    shutil.copy(UNIT, src / "deploy" / "bulletd.service")
    return src


def _refused(r: subprocess.CompletedProcess, root: Path, *texts: str) -> None:
    assert r.returncode != 0, r.stdout
    for t in texts:
        assert t in r.stderr, r.stderr
    assert not any(root.rglob("*.*")), list(root.rglob("*"))     # nothing was written


@pytest.mark.parametrize("os_release,expect", [
    ('NAME="Fedora Linux"\nID=fedora\nPRETTY_NAME="Fedora Linux 39"\n',
     "unsupported system 'Fedora Linux 39'"),
    ('ID=arch\n', "unsupported system 'arch'"),
])
def test_refuses_a_system_that_is_not_debian(tmp_path, os_release, expect):
    f = tmp_path / "os-release"
    f.write_text(os_release)
    root = tmp_path / "root"
    r = run_install("--root", str(root), env={"BULLETD_OS_RELEASE": str(f)})
    _refused(r, root, expect, "expected Debian or Raspberry Pi OS")


def test_accepts_raspberry_pi_os(tmp_path):
    f = tmp_path / "os-release"
    f.write_text('PRETTY_NAME="Raspbian GNU/Linux 12 (bookworm)"\nID=raspbian\nID_LIKE=debian\n')
    root = tmp_path / "root"
    # Stops at the next check (a 32-bit machine), which proves the OS check passed.
    r = run_install("--root", str(root), env={"BULLETD_OS_RELEASE": str(f), "BULLETD_MACHINE": "armv7l"})
    _refused(r, root, "unsupported machine 'armv7l': 32-bit ARM is not supported")


def test_refuses_an_old_python(tmp_path):
    old = Path("/root/.pyenv/versions/3.9.18/bin/python3.9")
    if not old.exists():     # a stand-in that answers like Python 3.9
        old = tmp_path / "python3.9"
        old.write_text('#!/bin/sh\ncase "$*" in *print*) echo 3.9 ;; *) exit 1 ;; esac\n')
        old.chmod(0o755)
    root = tmp_path / "root"
    r = subprocess.run(["bash", str(INSTALL), "--root", str(root), "--python", str(old)],
                       capture_output=True, text=True, timeout=60)
    _refused(r, root, "Python 3.9 found at", "needs Python >= 3.10")


def test_refuses_a_private_key_among_the_shipped_keys(tmp_path):
    from bulletd.signing import generate_keypair
    src = _fake_checkout(tmp_path)
    priv, _ = generate_keypair("oops", tmp_path / "k")
    shutil.copy(priv, src / "child_models" / "oops.pem")
    root = tmp_path / "root"
    r = run_install("--root", str(root), "--source", str(src))
    _refused(r, root, "oops.pem holds a PRIVATE key")


def test_refuses_an_unsigned_shipped_child(tmp_path):
    src = _fake_checkout(tmp_path)
    (src / "child_models" / "nosig.bullet").write_bytes(b"x")
    root = tmp_path / "root"
    r = run_install("--root", str(root), "--source", str(src))
    _refused(r, root, "nosig.bullet has no signature")


def test_refuses_unknown_options_and_a_lone_purge(tmp_path):
    root = tmp_path / "root"
    _refused(run_install("--root", str(root), "--frobnicate"), root, "unknown option '--frobnicate'")
    _refused(run_install("--root", str(root), "--purge"), root, "--purge only goes with --uninstall")


def test_refuses_a_folder_that_is_not_a_checkout(tmp_path):
    root = tmp_path / "root"
    r = run_install("--root", str(root), "--source", str(tmp_path))
    _refused(r, root, "is not a Bullet OS checkout")


# ------------------------------------------------------------------------------- uninstall

def test_uninstall_then_purge(installed):
    # Last in this file on purpose: it removes the module's install.
    r = run_install("--root", str(installed), "--uninstall")
    assert r.returncode == 0, r.stderr
    assert "kept" in r.stdout
    assert not (installed / "opt/bulletd").exists()
    assert not (installed / "etc/systemd/system/bulletd.service").exists()
    assert not (installed / "etc/systemd/system/multi-user.target.wants/bulletd.service").exists()
    assert not (installed / "usr/local/bin/bulletd-cli").is_symlink()
    assert (installed / "etc/bulletd/bulletd.yaml").exists()
    assert (installed / "var/lib/bulletd/models").is_dir()
    r = run_install("--root", str(installed), "--uninstall", "--purge")
    assert r.returncode == 0, r.stderr
    assert not (installed / "etc/bulletd").exists() and not (installed / "var/lib/bulletd").exists()
    assert "skipped (--no-user): userdel bulletd; groupdel bulletd" in r.stdout


# ------------------------------------------------------------------------------- shellcheck

@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed (apt-get install shellcheck)")
@pytest.mark.parametrize("script", ["install.sh", "arm64-e2e.sh", "mosquitto/make-certs.sh"])
def test_shellcheck_is_clean(script):
    r = subprocess.run(["shellcheck", str(DEPLOY / script)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout == "", r.stdout + r.stderr
