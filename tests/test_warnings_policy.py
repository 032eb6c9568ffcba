"""pytest.ini's warning policy: deprecations attributed to our code fail the test; others stay visible."""
from __future__ import annotations

import warnings

import pytest


def _warn_from(module_name: str, category: type[Warning]) -> None:
    """Raise `category` as if from a module of that name (warnings are attributed to the caller's __name__)."""
    code = compile(f"import warnings\nwarnings.warn('this API goes away', {category.__name__})", "<module>", "exec")
    exec(code, {"__name__": module_name, category.__name__: category})


@pytest.mark.parametrize("module_name", ["webui.engine.samplers", "webui", "app", "tests.test_engine", "test_engine", "conftest"])
@pytest.mark.parametrize("category", [DeprecationWarning, PendingDeprecationWarning, FutureWarning])
def test_a_deprecation_from_our_code_is_an_error(module_name, category):
    with pytest.raises(category, match="this API goes away"):
        _warn_from(module_name, category)


@pytest.mark.parametrize("module_name", ["diffusers.schedulers.x", "webuiapi", "gradio.blocks", "apps", "webui_extra"])
def test_a_deprecation_from_a_library_is_shown_not_raised(module_name):
    with warnings.catch_warnings(record=True) as shown:  # keeps pytest.ini's filters; records instead of printing
        _warn_from(module_name, DeprecationWarning)
    assert [str(w.message) for w in shown] == ["this API goes away"]


def test_pytest_ini_makes_our_deprecations_errors_and_names_what_it_ignores(pytestconfig):
    lines = pytestconfig.getini("filterwarnings")
    assert lines[0] == "default"
    assert "error::DeprecationWarning:(webui|app|tests|test_\\w+|conftest)(\\.|$)" in lines
    ignored = [line for line in lines if line.startswith("ignore")]
    assert ignored and all(line.split(":")[1] for line in ignored), "ignore only warnings named by their message"
