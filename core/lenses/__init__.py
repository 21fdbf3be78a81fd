"""Ways of reading the residual stream, as interchangeable strategies behind one decode call.

A ``Lens`` maps the residual rows [layer 0..L, …, d_model] to the rows the final norm and
unembedding then decode: the logit lens leaves them as they are; a tuned lens applies one affine
translator per layer (Belrose et al. 2023). Code that decodes residuals never knows which it holds.
The last row (the model's output) is never changed, so every lens equals the model there.
"""

from core.lenses.base import LENS_NAMES, Lens, LogitLens
from core.lenses.tuned import TunedLens, default_lens_dir, load_tuned_lens, lens_for

__all__ = ["LENS_NAMES", "Lens", "LogitLens", "TunedLens", "default_lens_dir", "lens_for", "load_tuned_lens"]
