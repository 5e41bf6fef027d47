"""crnn_jax: a convolutional-recurrent music-genre classifier in JAX/Flax.

Read top to bottom: mel.py (log-mel front end) -> model.py (CRNN, CNN) -> optim.py (Algorithm 8.6)
-> data/ (audio in: folders, cache, splits) -> training/ (the pmap step in steps.py, the loop in loop.py)
-> inference/ (your own songs); train.py, predict.py, evaluate.py ... are the thin commands (README, layout).
"""

__version__ = "0.1.0"
