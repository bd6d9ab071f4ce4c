import jax
import pytest


@pytest.fixture
def x64():
    """Run a test in double precision (exactness checks), restoring the default after."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


@pytest.fixture
def key():
    return jax.random.key(20261201)
