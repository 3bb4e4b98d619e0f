"""Phone numbers to E.164: Polish habits, prefixes, withheld callers, extensions."""
import phonenumbers
import pytest
from hypothesis import given, strategies as st

from daemon.ingest.calls.numbers import extension_of, normalise_number


@pytest.mark.parametrize("written, e164", [
    ("0611002030", "+48611002030"),          # leading 0 on ten digits
    ("611002030", "+48611002030"),
    ("0048611002030", "+48611002030"),
    ("0048 61 100 20 30", "+48611002030"),
    ("48611002030", "+48611002030"),
    ("+48611002030", "+48611002030"),
    ("+48 61 100-20-30", "+48611002030"),
    ("(61) 100 20 30", "+48611002030"),
    ('"0600123456"', "+48600123456"),
    ("+4930123456", "+4930123456"),          # Berlin stays Berlin
    ("004930123456", "+4930123456"),
])
def test_numbers_become_e164(written, e164):
    assert normalise_number(written) == e164


@pytest.mark.parametrize("withheld", [None, "", "  ", "Anonymous", "anonymous", "unknown",
                                      "Unknown", "withheld", "Zastrzeżony", "private", "-"])
def test_withheld_callers_have_no_number(withheld):
    assert normalise_number(withheld) is None


@pytest.mark.parametrize("extension", ["10", "101", "2001"])
def test_internal_extensions_are_kept(extension):
    assert normalise_number(extension) == extension


def test_short_service_numbers_are_kept_not_invented():
    assert normalise_number("19115") == "19115"


@given(st.integers(min_value=100_000_000, max_value=999_999_999),
       st.sampled_from(["", "0", "48", "0048", "+48", "+48 "]))
def test_fast_path_agrees_with_phonenumbers(national, prefix):
    """Plain Polish numbers skip phonenumbers for speed; the answer must be the same."""
    expected = phonenumbers.format_number(phonenumbers.parse(str(national), "PL"),
                                          phonenumbers.PhoneNumberFormat.E164)
    assert normalise_number(f"{prefix}{national}") == expected


@pytest.mark.parametrize("channel, extension", [
    ("SIP/101-0000a1b2", "101"), ("PJSIP/2001-00000001", "2001"), ("Local/102@from-queue/n", "102"),
    ("SIP/101", "101"), ("Anna Kowalska", None), ("", None)])
def test_extension_in_a_channel_name(channel, extension):
    assert extension_of(channel) == extension
