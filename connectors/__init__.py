"""Sources in, releases out: connectors read exports, link, check and publish them."""

import warnings

# Great Expectations imports pyspark when it is installed (the linkage's scale-out
# engine), and pyspark then warns about the pandas release: nothing a data engineer
# loading a release can act on, so it is not shown.
warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
