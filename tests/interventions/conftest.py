"""A tiny random model of every family the hooks must work on (module-scoped: built once per test file)."""

import pytest

from tests import tiny
from tests.interventions.batches import FAMILIES


@pytest.fixture(scope="module", params=FAMILIES, ids=[f for f, _ in FAMILIES])
def handle(request):
    family, style = request.param
    return tiny.handle(family, style=style)
