"""The schema of one Iris sample, shared by the data pipeline, training and serving."""

from typing import Final, Literal, get_args

#: Measurement names, in the column order of the UCI file and of every model input (cm).
FEATURES: Final = ("sepal_length", "sepal_width", "petal_length", "petal_width")
N_FEATURES: Final = len(FEATURES)

#: A class name as UCI spells it, as a type (request and flow parameter schemas list them).
ClassName = Literal["Iris-setosa", "Iris-versicolor", "Iris-virginica"]

#: Class names as UCI spells them; label index = position in this tuple (sorted order).
CLASS_NAMES: Final[tuple[str, ...]] = get_args(ClassName)

#: Accepted range of a measurement the services take in, in cm: above 0 and at most this.
#: Fisher's largest is 7.9 cm; 30 cm leaves room for unusual flowers (and drift to show up)
#: while refusing values that can only be a unit or typing error.
MEASUREMENT_MAX_CM: Final = 30.0

#: One test-set row per class (data/test.csv), used as documentation examples and to check
#: that a freshly downloaded model answers sensibly before it is served.
EXAMPLES: Final = {
    "Iris-setosa": (5.1, 3.5, 1.4, 0.2),
    "Iris-versicolor": (6.4, 3.2, 4.5, 1.5),
    "Iris-virginica": (5.8, 2.7, 5.1, 1.9),
}
