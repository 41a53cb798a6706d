"""Cleaning: Dify's pre-processing rules, each on and off, and what is always removed."""

from __future__ import annotations

import unicodedata

import pytest

from tusk.rag.clean import CleaningRules, clean

NONE = CleaningRules(remove_extra_spaces=False, remove_urls_emails=False)
SPACES = CleaningRules(remove_extra_spaces=True, remove_urls_emails=False)
URLS = CleaningRules(remove_extra_spaces=False, remove_urls_emails=True)
BOTH = CleaningRules(remove_extra_spaces=True, remove_urls_emails=True)


def test_defaults_are_difys_automatic_rules() -> None:
    assert CleaningRules() == SPACES


def test_extra_spaces_collapse_when_the_rule_is_on() -> None:
    text = "a  b\t\tc\u00a0\u00a0d\u3000\u3000e  \nline   \n\n\n\n\nend"
    assert clean(text, SPACES) == "a b c d e\nline\n\nend"


def test_extra_spaces_stay_when_the_rule_is_off() -> None:
    text = "a  b\t\tc\n\n\n\nend  "
    assert clean(text, NONE) == text


def test_blank_lines_made_of_spaces_count_as_blank() -> None:
    assert clean("one\n   \n \t \n\ntwo", SPACES) == "one\n\ntwo"


def test_two_newlines_are_kept_and_single_ones_too() -> None:
    assert clean("a\nb\n\nc", SPACES) == "a\nb\n\nc"


def test_urls_and_emails_are_removed_when_the_rule_is_on() -> None:
    text = (
        "See https://example.com/docs?q=1#top, ftp://files.example.org/a.zip and "
        "www.example.net/page. Write to ann.lee+rag@example.co.uk or mailto:bob@example.com."
    )
    assert clean(text, URLS) == "See ,  and . Write to  or ."


def test_urls_and_emails_stay_when_the_rule_is_off() -> None:
    text = "See https://example.com and write to ann@example.com."
    assert clean(text, NONE) == text
    assert clean(text, SPACES) == text


def test_both_rules_together_leave_no_double_spaces() -> None:
    assert clean("Docs at https://example.com today", BOTH) == "Docs at today"


def test_url_in_markdown_link_stops_at_the_bracket() -> None:
    assert clean("[guide](https://example.com/guide) next", URLS) == "[guide]() next"


def test_cjk_text_is_untouched() -> None:
    text = "北京是中国的首都。東京は日本の首都です。서울은 한국의 수도입니다。"
    for rules in (NONE, SPACES, URLS, BOTH):
        assert clean(text, rules) == text


def test_cjk_text_next_to_a_url_or_address_stays() -> None:
    text = "请访问https://example.com/文档或写信给ann@example.com谢谢"
    assert clean(text, URLS) == "请访问文档或写信给谢谢"


@pytest.mark.parametrize("rules", [NONE, SPACES, URLS, BOTH])
def test_control_characters_are_always_removed(rules: CleaningRules) -> None:
    text = "a\x00b\x01c\x08d\x1be\x7ff\ufffeg\uffffh\ud800i\nj"
    assert clean(text, rules) == "abcdefghi\nj"


def test_tabs_are_kept_without_the_spaces_rule() -> None:
    assert clean("name\tage\nAnn\t41", NONE) == "name\tage\nAnn\t41"


def test_line_breaks_of_every_kind_become_newlines() -> None:
    assert clean("a\r\nb\rc\fd\ve\u2028f\x85g", NONE) == "a\nb\nc\nd\ne\nf\ng"


def test_text_is_normalised_to_nfc() -> None:
    decomposed = unicodedata.normalize("NFD", "café déjà")
    assert decomposed != "café déjà"
    assert clean(decomposed, NONE) == "café déjà"


def test_from_dify_reads_enabled_rules() -> None:
    rules = CleaningRules.from_dify(
        [
            {"id": "remove_extra_spaces", "enabled": False},
            {"id": "remove_urls_emails", "enabled": True},
        ]
    )
    assert rules == URLS


def test_from_dify_ignores_unknown_and_malformed_entries() -> None:
    rules = CleaningRules.from_dify(
        [
            {"id": "remove_stopwords", "enabled": True},
            {"id": "remove_extra_spaces", "enabled": True},
            {"id": "remove_urls_emails", "enabled": "yes"},
            {"enabled": True},
        ]
    )
    assert rules == SPACES


def test_from_dify_without_rules_gives_the_defaults() -> None:
    assert CleaningRules.from_dify(None) == CleaningRules()


def test_from_dify_with_an_empty_list_turns_everything_off() -> None:
    assert CleaningRules.from_dify([]) == NONE
