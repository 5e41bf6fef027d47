"""Plant known bugs one at a time in a scratch copy of the checkout and show which fast-tier test catches each.

    python tests/planted_bugs.py              # all of them (~3 minutes on 2 cores)
    python tests/planted_bugs.py wd_sign      # one

Each bug is a textual edit of one source line (the edit must match, or the script says the source moved).
For each: copy the tracked files to a temporary folder, plant, run the fast tier (-m "not slow") of the test
files that should notice it, stop at the first failure and print it. A bug nobody notices prints MISSED and
the script exits 1. The unplanted copy runs the same files first, so a failure is the bug's, not the copy's.
Not collected by pytest (no test_ prefix): it runs pytest itself, many times.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> (test files of the fast tier that should notice, [(file, old text, new text), ...])
BUGS = {
    "mel_constant": (["tests/test_mel.py"], [
        ("crnn_jax/mel.py", "2595.0 * xp.log10", "2596.0 * xp.log10"),
        ("crnn_jax/mel.py", "xp.asarray(m) / 2595.0", "xp.asarray(m) / 2596.0")]),  # both ways: self-consistent
    "gradient_at_theta": (["tests/test_optim.py", "tests/test_train.py"], [
        ("crnn_jax/training/steps.py", "grad_fn(optim.interim_params(state.params, state.opt_state))",
         "grad_fn(state.params)")]),
    "eps_outside_sqrt": (["tests/test_optim.py"], [
        ("crnn_jax/optim.py", "jnp.sqrt(jnp.asarray(eps, r.dtype) + r)", "(jnp.asarray(eps, r.dtype) + jnp.sqrt(r))")]),
    "no_gradient_pmean": (["tests/test_train.py", "tests/test_optim.py"], [
        ("crnn_jax/training/steps.py", "grads = jax.lax.pmean(grads, AXIS)", "grads = grads")]),
    "unsynchronised_batchnorm": (["tests/test_train.py", "tests/test_model.py"], [
        ("crnn_jax/model.py", "axis_name=self.axis_name if train else None", "axis_name=None")]),
    "song_mean_of_probabilities": (["tests/test_evaluate.py", "tests/test_train.py", "tests/test_predict.py"], [
        ("crnn_jax/training/report.py", "np.add.at(total, rows, window_logp)",
         "np.add.at(total, rows, np.exp(window_logp))"),
        ("crnn_jax/training/report.py", "return total / np.maximum(counts, 1)",
         "return np.log(total / np.maximum(counts, 1))")]),
    "augmentation_keys_ignore_step": (["tests/test_augment.py", "tests/test_lowpass.py"], [
        ("crnn_jax/training/augment.py", "jax.random.fold_in(jax.random.PRNGKey(seed), STREAM), step)",
         "jax.random.fold_in(jax.random.PRNGKey(seed), STREAM), 0)")]),
    "dropout_keys_ignore_step": (["tests/test_train.py"], [
        ("crnn_jax/training/steps.py", "jax.random.fold_in(jax.random.PRNGKey(seed), state.step)",
         "jax.random.fold_in(jax.random.PRNGKey(seed), 0)")]),
    "kfold_test_song_in_training": (["tests/test_splits.py"], [
        ("crnn_jax/data/splits.py", 'parts["train"] += rest[n_valid:].tolist()',
         'parts["train"] += rest[n_valid:].tolist() + idx[in_test][:1].tolist()')]),
    "weight_decay_sign": (["tests/test_optim.py"], [
        ("crnn_jax/optim.py", "return u - (jnp.asarray(lr, u.dtype) * jnp.asarray(rate, u.dtype)) * p.astype(u.dtype)",
         "return u + (jnp.asarray(lr, u.dtype) * jnp.asarray(rate, u.dtype)) * p.astype(u.dtype)")]),
}


def fast_tier(copy: str, files: list[str]) -> tuple[int, str]:
    """pytest's fast tier of `files` in `copy`, in one process, stopping at the first failure -> (rc, output)."""
    env = dict(os.environ, PYTHONPATH=copy)
    cmd = [sys.executable, "-m", "pytest", "-m", "not slow", "-x", "-q", "-n", "0", "-p", "no:cacheprovider", *files]
    p = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True)
    return p.returncode, p.stdout + p.stderr


def main(names: list[str]) -> int:
    unknown = [n for n in names if n not in BUGS]
    if unknown:
        print(f"planted_bugs: no bug named {', '.join(unknown)}; choose from {', '.join(BUGS)}")
        return 2
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    missed = []
    with tempfile.TemporaryDirectory(prefix="planted_") as copy:
        for f in files:
            if os.path.isfile(os.path.join(ROOT, f)):
                os.makedirs(os.path.dirname(os.path.join(copy, f)), exist_ok=True)
                shutil.copy2(os.path.join(ROOT, f), os.path.join(copy, f))
        passed = set()  # test-file sets the unplanted copy passed
        for name in names or list(BUGS):
            tests, edits = BUGS[name]
            if tuple(tests) not in passed:
                rc, out = fast_tier(copy, tests)
                if rc != 0:
                    print(f"{name}: the unplanted copy already fails {' '.join(tests)}:\n{out[-2000:]}")
                    return 1
                passed.add(tuple(tests))
            originals = {}
            for f, old, new in edits:
                path = os.path.join(copy, f)
                with open(path) as fh:
                    text = fh.read()
                originals.setdefault(f, text)
                if old not in text:
                    print(f"{name}: {f} no longer holds {old!r}: update BUGS to the moved source")
                    return 1
                with open(path, "w") as fh:
                    fh.write(text.replace(old, new))
            rc, out = fast_tier(copy, tests)
            for f, text in originals.items():
                with open(os.path.join(copy, f), "w") as fh:
                    fh.write(text)
            failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", out, re.M)
            if rc != 0 and failed:
                print(f"{name}: caught by {failed[0]}")
            else:
                print(f"{name}: MISSED by the fast tier of {' '.join(tests)}")
                missed.append(name)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
