"""The schema of one Iris sample, shared by the data pipeline, training and serving."""

from typing import Final

#: Measurement names, in the column order of the UCI file and of every model input (cm).
FEATURES: Final = ("sepal_length", "sepal_width", "petal_length", "petal_width")
N_FEATURES: Final = len(FEATURES)

#: Class names as UCI spells them; label index = position in this tuple (sorted order).
CLASS_NAMES: Final = ("Iris-setosa", "Iris-versicolor", "Iris-virginica")
