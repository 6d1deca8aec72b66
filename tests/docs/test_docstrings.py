"""Every public class and function has a numpydoc docstring with a working example; every
module, public or not, has a module docstring; the API page lists the public names, and
only those.

The public API is ``dask_asyncopt.__all__`` plus the public names of every public module
(a module's ``__all__`` if it has one, else the classes and functions it defines whose
names do not start with ``_``).  The layers under :data:`INTERNAL_PACKAGES` are the
machinery behind the estimators: no stable API, not in the API reference, but each of
their modules says what it holds.  A new top-level module (or package) is public by
default: document it, or list it here as internal.
"""

import doctest
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest
from numpydoc.docscrape import NumpyDocString
from numpydoc.validate import validate

import dask_asyncopt

API_RST = Path(__file__).resolve().parents[2] / "docs" / "api.rst"

# implementation modules: no stable API, not in the API reference
INTERNAL_MODULES = {"dask_asyncopt.__main__"}
# the layers behind the estimators (``optimizer=``, ``solver=`` are their public face)
INTERNAL_PACKAGES = tuple(f"dask_asyncopt.{layer}" for layer in (
    "objective", "kernels", "store", "data", "solvers"))

# numpydoc checks every public class and function must pass (numpydoc.validate codes):
# a docstring with a summary, every parameter documented (with a description) and no
# unknown ones, a Returns section for functions that return, and an Examples section.
REQUIRED = {"GL08", "SS01", "PR01", "PR02", "PR07", "RT01", "RT03", "EX01"}
# public methods of public classes: the same minus Examples (the class example shows
# them; sklearn's own methods are not ours to check)
REQUIRED_METHOD = REQUIRED - {"EX01"}


@pytest.fixture(scope="module", autouse=True)
def _close_embedded_cluster():
    """The ``embedded_client`` example starts the process-wide embedded cluster: close
    it here, while pytest's output streams are open (at exit, its logging would write
    to closed streams)."""
    yield
    from dask_asyncopt import cluster

    cluster._shutdown()


def _in_layer(name):
    return any(name == package or name.startswith(package + ".")
               for package in INTERNAL_PACKAGES)


def _is_internal(name):
    return name in INTERNAL_MODULES or _in_layer(name) or any(
        part.startswith("_") and part != "__main__" for part in name.split("."))


def _all_modules():
    names = ["dask_asyncopt"]
    for info in pkgutil.walk_packages(dask_asyncopt.__path__, "dask_asyncopt."):
        names.append(info.name)
    return names


def public_modules():
    return [m for m in _all_modules() if m != "dask_asyncopt" and not _is_internal(m)]


def internal_modules():
    return [m for m in _all_modules() if _is_internal(m)]


def _module_public_names(modname):
    module = importlib.import_module(modname)
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [name for name, obj in vars(module).items()
            if not name.startswith("_") and (inspect.isclass(obj) or inspect.isfunction(obj))
            and obj.__module__ == modname]


def public_objects():
    """(qualified name, object) of every public class and function, canonical names."""
    out = {}
    for name in dask_asyncopt.__all__:
        obj = getattr(dask_asyncopt, name)
        out[f"{obj.__module__}.{obj.__qualname__}"] = obj
    for modname in public_modules():
        module = importlib.import_module(modname)
        for name in _module_public_names(modname):
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                out[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return sorted(out.items())


def public_methods():
    """Public methods defined by our public classes (inherited scikit-learn ones excluded)."""
    out = []
    for qualname, cls in public_objects():
        if not inspect.isclass(cls):
            continue
        for name in dir(cls):
            if name.startswith("_") and name != "__call__":
                continue
            attr = inspect.getattr_static(cls, name)
            func = attr.__func__ if isinstance(attr, (staticmethod, classmethod)) else attr
            if inspect.isfunction(func) and func.__module__.startswith("dask_asyncopt"):
                out.append(f"{qualname}.{name}")
    return sorted(out)


def test_public_api_is_found():
    names = [q for q, _ in public_objects()]
    # the discovery itself must not silently find nothing
    for expected in ("dask_asyncopt.estimators.linear_model.AsyncSGDClassifier",
                     "dask_asyncopt.estimators.recommender.MatrixFactorization",
                     "dask_asyncopt.datasets.make_sparse_classification",
                     "dask_asyncopt.plotting.plot_history",
                     "dask_asyncopt.progress.FitProgress",
                     "dask_asyncopt.stragglers.DutyCycle"):
        assert expected in names
    assert "dask_asyncopt.estimators.linear_model.AsyncSGDClassifier.fit" in public_methods()
    # nothing of the machinery is public: no solver, store or kernel name
    assert not [q for q in names if _in_layer(q)]
    for layer in INTERNAL_PACKAGES + ("dask_asyncopt.estimators",):
        assert layer in _all_modules()  # a renamed layer must be renamed here too
    internal = internal_modules()
    for expected in ("dask_asyncopt.solvers.run", "dask_asyncopt.store.blocks",
                     "dask_asyncopt.kernels.sweeps", "dask_asyncopt.objective.penalties",
                     "dask_asyncopt.data.placement", "dask_asyncopt.__main__"):
        assert expected in internal


@pytest.mark.parametrize("modname", public_modules())
def test_public_module_has_docstring(modname):
    assert inspect.getdoc(importlib.import_module(modname)), f"{modname} has no docstring"


@pytest.mark.parametrize("modname", internal_modules())
def test_internal_module_has_docstring(modname):
    """The machinery is not API, but each module (package) says what it holds."""
    assert inspect.getdoc(importlib.import_module(modname)), f"{modname} has no docstring"


@pytest.mark.parametrize("qualname", [q for q, _ in public_objects()])
def test_numpydoc_docstring_with_examples(qualname):
    errors = [(code, msg) for code, msg in validate(qualname)["errors"] if code in REQUIRED]
    assert not errors, f"{qualname}: " + "; ".join(f"{c} {m}" for c, m in errors)


@pytest.mark.parametrize("qualname", public_methods())
def test_public_method_docstring(qualname):
    errors = [(code, msg) for code, msg in validate(qualname)["errors"]
              if code in REQUIRED_METHOD]
    assert not errors, f"{qualname}: " + "; ".join(f"{c} {m}" for c, m in errors)


@pytest.mark.parametrize("qualname,obj", public_objects())
def test_examples_run(qualname, obj):
    """The Examples are doctests, and they pass (on the shared test cluster)."""
    examples = "\n".join(NumpyDocString(inspect.getdoc(obj))["Examples"])
    assert ">>>" in examples, f"{qualname}: the Examples section has no >>> example"
    module = importlib.import_module(obj.__module__)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    # the object's own docstring and those of its methods
    tests = [t for t in finder.find(obj, qualname, module=module,
                                    globs=dict(vars(module))) if t.examples]
    assert tests
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{qualname}: {result.failed} doctest example(s) failed"


def _documented():
    text = API_RST.read_text()
    return set(re.findall(r"^\.\. auto(?:class|function):: (\S+)", text, re.M)), set(
        re.findall(r"^\.\. automodule:: (\S+)", text, re.M))


def test_api_reference_lists_every_public_name():
    documented, _ = _documented()
    missing = []
    for qualname, obj in public_objects():
        public = {qualname, f"dask_asyncopt.{obj.__name__}"}
        if not public & documented:
            missing.append(qualname)
    assert not missing, f"not in docs/api.rst: {missing}"


def test_api_reference_lists_only_public_names():
    """The API page documents the public face: no module or name of the machinery."""
    documented, modules = _documented()
    public = {q for q, _ in public_objects()} | {
        f"dask_asyncopt.{name}" for name in dask_asyncopt.__all__}
    assert documented and not documented - public, f"not public: {documented - public}"
    assert modules and set(modules) <= set(public_modules()), modules - set(public_modules())
