"""crnn_jax: a convolutional-recurrent music-genre classifier in JAX/Flax.

Read top to bottom: mel.py (log-mel front end) -> model.py (CRNN, CNN) -> optim.py (Algorithm 8.6)
-> synth.py / data.py (audio in) -> train.py (pmap training loop) -> predict.py (your own songs).
"""

__version__ = "0.1.0"
