"""How the benchmarks call their peers where the peers' APIs moved between versions."""


def penalty_args(penalty):
    """scikit-learn ``LogisticRegression``'s arguments for an ``"l1"`` or ``"l2"``
    penalty on every version the package supports: ``l1_ratio`` alone from 1.8
    (``penalty`` is deprecated there, to be removed in 1.10), ``penalty`` before
    (where ``l1_ratio`` is read for elastic-net only)."""
    import sklearn
    from sklearn.utils.fixes import parse_version

    if parse_version(sklearn.__version__) >= parse_version("1.8"):
        return {"l1_ratio": 1.0 if penalty == "l1" else 0.0}
    return {"penalty": penalty}
