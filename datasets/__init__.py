"""Data layer: Kaggle's layout (`kaggle`), folds (`folds`), a synthetic set in the same layout (`synthetic`),
unpacking the competition zip (`prepare`)."""
