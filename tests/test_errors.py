"""User errors cross Ray's process boundary whole, and the CLI finds them behind Ray's wrappers; bugs stay bugs."""

from __future__ import annotations

import pickle
import traceback

import pytest

from congrad_ray.errors import ConfigError, InputError, user_error, user_errors_at_call


def test_config_error_pickles_with_its_problems():
    err = pickle.loads(pickle.dumps(ConfigError(["first problem", "second problem"])))
    assert err.problems == ["first problem", "second problem"]
    assert str(err) == "first problem\nsecond problem"


def _raised_in_a_worker(error: Exception, ray_data: bool):
    """The exception a driver gets from a Ray task that raised ``error``, built as Ray's worker builds it: a Ray Data
    UDF's error is wrapped in ``UserCodeException`` (``raise ... from error``), then the whole is formatted into
    the ``RayTaskError``'s text and pickled across, which drops ``__cause__``."""
    from ray._private.utils import format_error_message
    from ray.exceptions import RayTaskError, UserCodeException

    try:
        try:
            raise error
        except Exception as inner:
            if not ray_data:
                raise
            raise UserCodeException("UDF failed to process a data block.") from inner
    except Exception as raised:
        text = format_error_message("".join(traceback.format_exception(raised)), task_exception=True)
        cause = pickle.loads(pickle.dumps(raised))
    return RayTaskError("prepare_units", text, cause).as_instanceof_cause()


@pytest.mark.parametrize("ray_data", [False, True], ids=["task", "ray_data_udf"])
def test_a_user_error_raised_in_a_worker_is_found(ray_data):
    config = user_error(_raised_in_a_worker(ConfigError(["cannot load the model at /m: bad", "second"]), ray_data))
    assert isinstance(config, ConfigError) and config.problems == ["cannot load the model at /m: bad", "second"]
    found = user_error(_raised_in_a_worker(InputError("x.parquet is not a readable Parquet file"), ray_data))
    assert isinstance(found, InputError) and str(found) == "x.parquet is not a readable Parquet file"


@pytest.mark.parametrize("ray_data", [False, True], ids=["task", "ray_data_udf"])
def test_a_bug_raised_in_a_worker_stays_a_bug(ray_data):
    assert user_error(_raised_in_a_worker(KeyError("lang"), ray_data)) is None
    assert user_error(RuntimeError("a bug mentioning congrad_ray.errors.ConfigError: in its text")) is None


def test_ray_train_worker_failures_are_searched():
    from ray.train import WorkerGroupError

    err = WorkerGroupError("rank 1 failed", {0: RuntimeError("peer died"), 1: ConfigError(["cannot write /out"])})
    assert user_error(err).problems == ["cannot write /out"]


def test_an_actor_constructor_error_is_raised_by_its_calls():
    @user_errors_at_call
    class Actor:
        def __init__(self, fail: bool):
            if fail:
                raise ConfigError(["cannot load the model at /m"])

        def __call__(self, batch):
            return batch

    assert Actor(False)(3) == 3
    broken = Actor(True)  # Ray would print a failed constructor's traceback; a failed call it reports
    with pytest.raises(ConfigError, match="cannot load the model"):
        broken(3)
