"""scikit-learn estimators: the linear models and the recommender."""
