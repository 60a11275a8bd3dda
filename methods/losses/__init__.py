"""The training losses of the deep methods, one module per family, each a plain function of tensors.

Kept apart from the methods so that each loss is tested on its own against a loop-based reference
(``tests/methods/losses/``), in float32 and float64, and on CUDA when one is present.
"""
