"""Copy a folder of genre sub-folders through a 16 kHz recording chain: every file resampled to 16 kHz (nothing
above 8 kHz survives) and written as 16-bit WAV under the same relative name, as gtzan-53-16k's clips were made.

    python experiments/through_16k.py ../shared/data/gtzan-70 runs/gtzan-70-16k

Scoring a model on the copy instead of the originals (`crnn-jax evaluate --workdir RUN --data runs/gtzan-70-16k
--split kfold:5 --fold i --out ...`: the same song names, so the same k-fold test songs) measures how much of an
accuracy drop on gtzan-53-16k is the recording chain rather than the new artists. Writes only under DST.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from crnn_jax.data import decode


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    src, dst = argv
    if os.path.exists(dst):
        print(f"through_16k: error: {dst} exists; name a new folder", file=sys.stderr)
        return 2
    n = 0
    for root, _, names in os.walk(src):
        for name in sorted(names):
            if os.path.splitext(name)[1].lower() not in decode.AUDIO_EXTS:
                continue
            x, rate = sf.read(os.path.join(root, name), dtype="float32", always_2d=True)  # [frames, channels]
            up, down = decode.ratio(rate, 16000)
            y = resample_poly(x.mean(axis=1), up, down)  # mono at 16 kHz: the anti-alias filter removes > 8 kHz
            out = os.path.join(dst, os.path.relpath(root, src), os.path.splitext(name)[0] + ".wav")
            os.makedirs(os.path.dirname(out), exist_ok=True)
            sf.write(out, np.clip(y, -1.0, 1.0), 16000, subtype="PCM_16")
            n += 1
    print(f"{n} files through 16 kHz into {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
