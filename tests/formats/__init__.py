"""Tiny examples of each source format, written by the tests into a temporary folder.

One module per converter (named like ``data_prep.converters.CONVERTERS``), each with::

    def example(root: Path) -> dict        # writes files under root, returns convert() kwargs
    def cli_args(root: Path) -> list[str]  # the same as `kitchen-study prepare NAME ...` args
                                           # (without --out), after example(root) ran
"""
