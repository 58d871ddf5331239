"""The SQL NHS-number check every connector uses: the NHS rule, and never an error."""

from __future__ import annotations

import duckdb
import nhs_number
from hypothesis import example, given
from hypothesis import strategies as st

from connectors import build

_con = duckdb.connect()
build.install_macros(_con)

digits_or_not = st.text(
    alphabet=st.sampled_from("0123456789 A-x٣\u00a0"), min_size=0, max_size=12
) | st.integers(0, 9_999_999_999).map(lambda n: f"{n:010d}")


@given(digits_or_not)
@example("943476591A")  # the letter used to raise a conversion error and stop the load
@example("")
@example("9434765919")
@example("1332995098")  # valid by modulus 11, in the CHI range, not a CHI date
def test_sql_check_agrees_with_the_nhs_number_package_and_never_raises(value):
    ours = _con.execute("SELECT hub_nhs_valid($n)", {"n": value}).fetchall()[0][0]
    # the modulus 11 rule (the package's is_valid also asks a Scottish CHI number to
    # start with a date, which the hub does not check); 10 means "no valid check digit"
    expected = len(value) == 10 and value.isascii() and value.isdigit()
    expected = expected and nhs_number.calculate_checksum(value[:9]) == int(value[9])
    assert bool(ours) == expected, value
