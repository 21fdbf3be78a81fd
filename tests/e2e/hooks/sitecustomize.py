"""Imported at start-up by the browser tests' servers (tests/e2e/conftest.launch puts this folder on PYTHONPATH
when a LAYERSCOPE_E2E_* variable is set), so the app's own code stays free of test hooks:

- ``LAYERSCOPE_E2E_LOAD_DELAY``: seconds every model load waits first (a big model, a slow disk);
- ``LAYERSCOPE_E2E_FORWARDS``: a file that gets one line per forward pass of any loaded model.
"""

import os
import time

_DELAY = float(os.environ.get("LAYERSCOPE_E2E_LOAD_DELAY", "0") or 0)
_LOG = os.environ.get("LAYERSCOPE_E2E_FORWARDS", "")

if _DELAY or _LOG:
    import core.models

    _real = core.models.load_model

    def load_model(spec, options=None, progress=None, **kwargs):
        time.sleep(_DELAY)
        handle = _real(spec, options, progress=progress, **kwargs)
        if _LOG:
            def count(module, args):
                with open(_LOG, "a") as log:
                    log.write(f"{handle.spec}\n")

            handle.model.register_forward_pre_hook(count)
        return handle

    core.models.load_model = load_model
