"""Atomic writes: every file and folder a run produces appears whole or not at all."""

import errno
import functools
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp and mkdtemp create owner-only (0600 / 0700) entries; artifacts get the modes any other file would.
FILE_MODE = 0o666 & ~_umask()
DIR_MODE = 0o777 & ~_umask()


def _read(path):
    with open(path) as f:
        return f.read().strip()


def _code(*parts):
    return hashlib.sha1("\0".join(parts).encode()).hexdigest()[:8]


@functools.lru_cache(maxsize=None)
def _process_space():
    """Two short codes for where this process's pid means something: its host and pid namespace (a container that
    shares the host's name has pids of its own), and the host's boot (after a reboot, every earlier writer is gone)."""
    parts = {}
    for name, get, source in (("boot", _read, "/proc/sys/kernel/random/boot_id"),
                              ("namespace", os.readlink, "/proc/self/ns/pid")):
        try:
            parts[name] = get(source)
        except OSError:
            parts[name] = ""  # No /proc (macOS): the host name and the pid alone.
    return _code(socket.gethostname(), parts["namespace"]), _code(parts["boot"])


def _temp_prefix(path, kind):
    """`.NAME.KIND-SPACE-BOOT-PID-`: a temporary entry names its writer, so that a later writer can tell which ones a
    killed process left behind (`remove_leftovers`)."""
    space, boot = _process_space()
    return f".{os.path.basename(os.path.abspath(path))}.{kind}-{space}-{boot}-{os.getpid()}-"


# What `_temp_prefix` names, followed by mkstemp's 8 random characters and the file's suffix, if any.
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<space>[0-9a-f]{8})-(?P<boot>[0-9a-f]{8})-(?P<pid>\d+)-"
                        r"[a-z0-9_]{8}(\.[A-Za-z0-9]+)?")
_swept_folders = set()


def _writer_is_gone(space, boot, pid):
    """Whether the writer of an entry, process `pid` of host and namespace `space` in boot `boot`, has ended. Another
    space's (another machine's or container's) counts as running, since its pids cannot be checked from here."""
    here, this_boot = _process_space()
    if space != here or os.name != "posix":  # On Windows os.kill(pid, 0) would send a Ctrl+C.
        return False
    if boot != this_boot:
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        pass  # Alive under another user; a pid too large to be one here.
    return False


def remove_leftovers(folder):
    """Removes what writers killed midway (a `kill -9`, a crash, a power loss) left in `folder`: their temporary files
    and folders, and, for one that died between its two renames in `replace_dir`, puts the previous folder back unless
    a newer one is there. Only entries of ended writers of this host and container are touched (an older tfvae's
    temporary names carry no writer), and best effort: what another writer removes first, or this user may not
    remove, is left alone.

    Args:
      folder: the folder to clean; one that does not exist is left so.
    """
    try:
        entries = sorted(os.listdir(folder))
    except OSError:
        return
    for entry in entries:
        match = _TEMPORARY.fullmatch(entry)
        if not match or not _writer_is_gone(match["space"], match["boot"], match["pid"]):
            continue
        full = os.path.join(folder, entry)
        try:
            if match["kind"] == "old":
                previous, original = os.path.join(full, "previous"), os.path.join(folder, match["name"])
                if os.path.lexists(previous) and not os.path.lexists(original):
                    os.rename(previous, original)
            if os.path.isdir(full) and not os.path.islink(full):
                shutil.rmtree(full)
            else:
                os.unlink(full)
        except OSError:
            continue  # Removed or restored by another writer meanwhile, or another user's in a shared folder.


def _remove_leftovers_once(folder):
    """`remove_leftovers` of `folder` the first time this process writes there: a tool writing thousands of files
    into one folder lists it once, not once a file."""
    if folder not in _swept_folders:
        _swept_folders.add(folder)
        remove_leftovers(folder)


def write_text(path, text):
    """Writes `text` to `path` through a temporary file in the same folder and an atomic rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    _remove_leftovers_once(folder)
    fd, tmp = _temp_file(path, folder)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException as e:
        os.unlink(tmp)
        _raise_as_error_of(path, e)


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def print_json(obj, path=""):
    """Prints `obj` as JSON in its own key order (a report), and writes the same text to `path` when given."""
    text = json.dumps(obj, indent=2)
    print(text)
    if path:
        write_text(path, text + "\n")


def write_bytes_with(path, write_fn):
    """Calls `write_fn(tmp_path)` to produce a file (e.g. a PNG), then renames it to `path` (`write_all_or_none`)."""
    write_all_or_none([(path, write_fn)])


def write_all_or_none(writes):
    """Writes several files as one: `writes` is [(path, write_fn)], `write_fn(tmp_path)` producing each. All are
    written to temporary names first and renamed into place only once every one is written, so a failure (a full
    disk, a folder where a file goes) leaves none of them, nor the folders made for them."""
    made, temps = [], []
    try:
        for path, write_fn in writes:
            folder = os.path.dirname(os.path.abspath(path))
            missing = first_missing_folder(folder)
            os.makedirs(folder, exist_ok=True)
            made += [missing] if missing else []
            _remove_leftovers_once(folder)
            fd, tmp = _temp_file(path, folder, os.path.splitext(path)[1])  # Writers that read the extension.
            os.close(fd)
            temps.append((tmp, path))
            try:
                write_fn(tmp)
                os.chmod(tmp, FILE_MODE)
            except BaseException as e:
                _raise_as_error_of(path, e)
        for tmp, path in temps:
            try:
                os.replace(tmp, path)
            except OSError as e:
                _raise_as_error_of(path, e)
    except BaseException:
        for tmp, _ in temps:
            if os.path.exists(tmp):
                os.unlink(tmp)
        for folder in reversed(made):
            shutil.rmtree(folder, ignore_errors=True)  # Made by this call: it holds nothing else.
        raise


def _temp_file(path, folder, suffix=""):
    """`tempfile.mkstemp` of a temporary file for `path` in `folder`: (fd, name)."""
    try:
        return tempfile.mkstemp(prefix=_temp_prefix(path, "tmp"), suffix=suffix, dir=folder)
    except OSError as e:
        _raise_as_error_of(path, e)


def _raise_as_error_of(path, error):
    """Raises `error`; an OS error about a temporary file of `path` (a full disk, a folder the OS refuses) as one
    about `path`, the name the user gave."""
    if isinstance(error, OSError) and error.errno is not None:
        raise OSError(error.errno, error.strerror, path) from error
    raise error


def make_temp_dir_beside(path):
    """A fresh temporary folder next to `path`, so that renaming it onto `path` stays on one filesystem."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    _remove_leftovers_once(parent)
    try:
        tmp_dir = tempfile.mkdtemp(prefix=_temp_prefix(path, "tmp"), dir=parent)
    except OSError as e:
        _raise_as_error_of(path, e)
    os.chmod(tmp_dir, DIR_MODE)
    return tmp_dir


# How often replace_dir starts again when another writer replaces the same folder at the same moment.
_REPLACE_ATTEMPTS = 10


def holds_something_else(path, marker_file):
    """Whether writing an export to `path` would destroy something: a file, or a folder with files but no
    `marker_file` (which marks an earlier export of the same kind, replaced whole by `replace_dir`)."""
    if not os.path.exists(path):
        return False
    if not os.path.isdir(path):
        return True
    return not os.path.isfile(os.path.join(path, marker_file)) and bool(os.listdir(path))


def holds_the_working_folder(path):
    """Whether `path` is the process's working folder or one of its parents (an empty path is the working folder)."""
    path, here = os.path.realpath(path or os.curdir), os.path.realpath(os.curdir)
    return here == path or here.startswith(path.rstrip(os.sep) + os.sep)


def replace_dir(tmp_dir, path):
    """Moves the finished folder `tmp_dir` onto `path`; an older `path` is kept until the new one is in place. When
    writers replace one folder at once (runs of a sweep sharing an --export_dir), each finishes, and the last stands."""
    if holds_the_working_folder(path):  # The flags' validators refuse it first; this keeps any caller from it.
        raise ValueError(f"{os.path.abspath(path or os.curdir)} is the working folder or holds it; replacing it would "
                         f"delete what it holds, so write the export to another folder")
    path = os.path.abspath(path)
    for attempt in range(_REPLACE_ATTEMPTS):
        old = None
        try:  # Both renames inside: a Ctrl-C can land just after either.
            if os.path.exists(path):
                old = tempfile.mkdtemp(prefix=_temp_prefix(path, "old"), dir=os.path.dirname(path))
                os.rename(path, os.path.join(old, "previous"))
            os.rename(tmp_dir, path)
            return
        except OSError as e:
            # Another writer moved `path` aside first, or put its own there between our two renames: start again.
            if (isinstance(e, FileNotFoundError) and os.path.exists(tmp_dir) or
                    e.errno in (errno.ENOTEMPTY, errno.EEXIST)):
                if attempt + 1 < _REPLACE_ATTEMPTS:
                    _put_back(old, path)  # If a third writer has moved theirs aside meanwhile.
                    continue
            _put_back(old, path)
            raise
        except BaseException:
            _put_back(old, path)
            raise
        finally:
            # Kept when nothing else is at `path` (a second Ctrl-C inside _put_back): remove_leftovers puts it back.
            if old and (os.path.lexists(path) or not os.path.lexists(os.path.join(old, "previous"))):
                shutil.rmtree(old, ignore_errors=True)


def _put_back(old, path):
    """Returns the folder replace_dir moved into `old` to `path`, unless a newer one is there."""
    if old and os.path.lexists(os.path.join(old, "previous")) and not os.path.lexists(path):
        os.rename(os.path.join(old, "previous"), path)


def first_missing_folder(path):
    """The outermost folder of `path` that does not exist yet (what `os.makedirs(path)` would create), or None."""
    path, missing = os.path.abspath(path), None
    while not os.path.exists(path):
        path, missing = os.path.dirname(path), path
    return missing
