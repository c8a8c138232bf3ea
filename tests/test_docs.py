"""The README as a user meets it: it opens with the two set-up commands, its Python runs as written, and every file
it links or shows exists."""

import os
import re

import pytest

from conftest import REPO, run_script

DOCS = ["README.md", "docs/performance.md"]


def _prose(path):
    """The Markdown text of `path` without fenced code blocks and inline code, where `](` is code, not a link."""
    text = open(os.path.join(REPO, path)).read()
    return re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", text, flags=re.S))


@pytest.mark.parametrize("path", DOCS)
def test_local_links_and_images_exist(path):
    prose = _prose(path)
    targets = re.findall(r"\]\(([^)\s]+)\)", prose) + re.findall(r'src="([^"]+)"', prose)
    local = [t.split("#")[0] for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")]
    assert local or path != "README.md", "the README shows no local file; the image check found nothing to check"
    base = os.path.dirname(os.path.join(REPO, path))
    missing = [t for t in local if not os.path.exists(os.path.normpath(os.path.join(base, t)))]
    assert not missing, f"{path} links files that do not exist: {missing}"


def test_readme_opens_with_the_two_set_up_commands():
    blocks = re.findall(r"```bash\n(.*?)```", open(os.path.join(REPO, "README.md")).read(), flags=re.S)
    main_job, tests = blocks[0].strip(), blocks[1].strip()
    assert main_job.startswith("pip install -e . && python scripts/train.py --flagfile=configs/tf1_tutorial.flags")
    assert main_job.endswith("python scripts/generate.py --saved_model=saved_models/tf1_tutorial --output=samples.png")
    assert tests == 'pip install -e ".[test]" && python -m pytest -q'
    ci = open(os.path.join(REPO, ".ci", "run")).read()  # CI runs the README's test command.
    assert 'pip install -q -e ".[test]"' in ci and "\npython -m pytest -q\n" in ci


def test_readme_python_runs_without_tfvae_and_gives_what_it_says(tmp_path):
    """The README's Python, run as written in a fresh process, then its comments checked: from a folder that has the
    repository's `saved_models/` and the LiteRT file that the README's `export_tflite.py` command writes there."""
    readme = open(os.path.join(REPO, "README.md")).read()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks, "the README shows no Python"
    os.symlink(os.path.join(REPO, "saved_models"), tmp_path / "saved_models")
    export_tflite = re.search(r"`python scripts/export_tflite\.py (--saved_model=\S+ --output=vae\.tflite)`", readme)
    assert export_tflite, "the README no longer shows the export_tflite.py command its LiteRT Python needs"
    result = run_script("export_tflite.py", *export_tflite.group(1).split(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    checks = """
import sys
import numpy as np
assert "tfvae" not in sys.modules
assert codes["z_mean"].shape == codes["z_logvar"].shape == (8, 20)
assert x_hat.shape == (8, 784) and samples.shape == (16, 784)
assert 0 <= float(tf.reduce_min(x_hat)) and float(tf.reduce_max(x_hat)) <= 1
np.testing.assert_allclose(x_hat_0.numpy(), x_hat[:1].numpy(), atol=1e-5)  # Batch 1 or 8: rounding only.
# The one-op call is the signature's own graph: the same numbers, and the same input checks.
np.testing.assert_array_equal(x_hat_0.numpy(), vae.signatures["reconstruct"](input=x[:1])["x_hat"].numpy())
codes_one_op = as_one_op(vae.signatures["encode"])(input=x)
assert sorted(codes_one_op) == sorted(codes) and all(np.array_equal(codes_one_op[k], codes[k]) for k in codes)
try:
    reconstruct_one(input=np.full((1, 784), np.nan, np.float32))
    raise SystemExit("the one-op call accepted a NaN image")
except tf.errors.InvalidArgumentError as e:
    assert "input has values outside [0, 1], or NaN or inf" in str(e), e
assert isinstance(x_hat_lite, np.ndarray)
np.testing.assert_allclose(x_hat_lite, x_hat[:1].numpy(), atol=1e-5)  # LiteRT's kernels: rounding only.
print("ok")
"""
    result = run_script(None, "\n".join(blocks) + checks, cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
