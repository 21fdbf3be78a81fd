"""A tiny random Llama shared by the tests of one file."""

import pytest

from tests import tiny


@pytest.fixture(scope="module")
def llama():
    return tiny.handle("llama")
