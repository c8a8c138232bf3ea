"""How every tfvae script runs and ends: its flags parsed (`config.parse_flags_or_exit`: one line and exit code 2
for a bad one); Ctrl-C and SIGTERM in one line (130, 143); a write the operating system refuses in one line (1).
Scripts call `run_main(main)`."""

import errno
import re
import signal
import sys

from absl import app

from tfvae import config


def exit_interrupted(message):
    """Prints `interrupted: MESSAGE` and ends the process by SIGINT, as an uncaught Ctrl-C does (after Python's
    clean-up) but without the traceback: the shell sees 130, and a shell loop running the script stops, which an
    exit code of 130 alone would not make it do."""
    print(f"interrupted: {message}", file=sys.stderr, flush=True)
    sys.excepthook = lambda *exc_info: None
    interrupt = KeyboardInterrupt()  # Python ends by SIGINT for this class only, not a subclass.
    interrupt.reported = True
    raise interrupt


# What the operating system says when it refuses a write, as errno and as TensorFlow's messages put it.
FILE_SYSTEM_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM, errno.EROFS, errno.EISDIR,
                      errno.ENOTDIR)
FILE_SYSTEM_REASONS = ("No space left on device", "Disk quota exceeded", "File too large", "Permission denied",
                       "Operation not permitted", "Read-only file system", "Is a directory", "Not a directory")


def op_error_reason(error):
    """The first line of an error's message (a TensorFlow OpError's without the "{{function_node ...}}" and
    "[Op:NAME]" around it: the reason, which fits in a one-line error); its type's name if it says nothing."""
    message = str(getattr(error, "message", None) or error)
    # Eager op errors end their first line in "[Op:NAME] name: " (the op's name, mostly empty).
    first_line = re.sub(r"\{\{function_node [^}]*\}\}|\[Op:\w+\][^\n]*", "", message).strip().split("\n")[0]
    return " ".join(first_line.split()) or type(error).__name__


def file_system_problem(error, where=None):
    """One line for an error the operating system gave while a file was written (a full disk, a folder it refuses),
    raised by Python or by a TensorFlow op (saving a checkpoint or an export); None for any other error.

    `where`: the file or folder to name instead of the one in the error (a temporary file inside it).
    """
    if isinstance(error, OSError) and error.errno in FILE_SYSTEM_ERRNOS:
        where = where or error.filename
        return f"{where}: {error.strerror}" if where else error.strerror
    tf = sys.modules.get("tensorflow")  # Not imported here: --help stays fast.
    if tf is not None and isinstance(error, tf.errors.OpError):
        # "{{function_node ...}} PATH; No space left on device [Op:SaveV2]": the path and the reason.
        message = op_error_reason(error)
        reason = next((reason for reason in FILE_SYSTEM_REASONS if reason in message), None)
        if reason:
            return f"{where}: {reason}" if where else message.replace("; ", ": ", 1)
    return None


class Terminated(BaseException):
    """SIGTERM, raised where the script is, so that what it was writing is removed as for Ctrl-C (a BaseException,
    like KeyboardInterrupt: no `except Exception` swallows it)."""


def _raise_terminated(number, frame):
    raise Terminated()


def run_main(main):
    """`app.run(main)` for a script: flags parsed by `parse_flags_or_exit`, and Ctrl-C or SIGTERM ending the script
    in one line (exit code 130 / 143) instead of a traceback or a silent death; tfvae writes each file whole or not at
    all.

    Args:
      main: the script's `main(argv)`.
    """
    def main_or_interrupted(argv):
        signal.signal(signal.SIGTERM, _raise_terminated)  # train.py's training defers it to a checkpoint instead.
        try:
            result = main(argv)
            # The work is done and said: a signal while the process ends (TensorFlow's teardown takes a moment, and
            # Python restores the default handlers at exit) would only turn a success into exit 130 or 143.
            for number in (signal.SIGINT, signal.SIGTERM):
                signal.signal(number, signal.SIG_IGN)
            return result
        except KeyboardInterrupt as e:
            if getattr(e, "reported", False):
                raise
            exit_interrupted("stopped by Ctrl-C (SIGINT); the files it wrote before are whole, none is half-written")
        except Terminated:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            print("interrupted: stopped by SIGTERM; the files it wrote before are whole, none is half-written",
                  file=sys.stderr, flush=True)
            sys.exit(128 + signal.SIGTERM)
        except Exception as e:
            problem = file_system_problem(e)
            if not problem:
                raise
            # What the up-front checks cannot see: a disk that fills up, a folder the OS refuses despite access(), a
            # folder made since where a file goes.
            fix = ("remove what is in the way, or pass another path" if problem.endswith(FILE_SYSTEM_REASONS[-2:])
                   else "free some space, or pass a path on another disk or in a folder you can write to")
            print(f"error: {problem}; nothing half-written is left: {fix}", file=sys.stderr)
            sys.exit(1)

    app.run(main_or_interrupted, flags_parser=config.parse_flags_or_exit)
