"""Clean extracted text before it is split: Dify's pre-processing rules, and what always goes.

Always: "\\r\\n", "\\r", vertical tabs, form feeds and Unicode line separators become "\\n"; the C0
control characters (NUL included) but tab and newline, DEL, the non-characters U+FFFE and U+FFFF
and lone surrogates are removed, since PostgreSQL's text and the tokenizers refuse them; the text
is normalised to Unicode NFC (composed accents, CJK left as it is).

Optional, as Dify's rules of the same ids:
- remove_extra_spaces: every run of horizontal whitespace (spaces, tabs, no-break and ideographic
  spaces...) becomes one space, spaces at the end of a line go, and 3 or more newlines become 2.
- remove_urls_emails: URLs (http://, https://, ftp://, www.) and e-mail addresses are deleted.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

_NEWLINES = re.compile(r"\r\n?|[\v\f\x85\u2028\u2029]")
_UNWANTED = re.compile(r"[\x00-\x08\x0e-\x1f\x7f\ufffe\uffff\ud800-\udfff]")
# Whitespace but "\n" (the other line breaks are "\n" by then): tabs, no-break, ideographic...
_SPACES = re.compile(r"[^\S\n]+")
_TRAILING = re.compile(r" +$", re.MULTILINE)
_BLANK_LINES = re.compile(r"\n{3,}")
# ASCII only, so that text written next to a URL or address (as CJK text is) stays; a URL ends
# before brackets and quotes, and a final full stop or comma belongs to the sentence.
_URL = re.compile(
    r"(?:\b(?:https?|ftp)://|\bwww\.)[\w\-.~:/?#@!$&*+,;=%]*[\w\-~/#@$&*+=%]", re.ASCII | re.I
)
_EMAIL = re.compile(r"(?:\bmailto:)?\b[\w.%+-]+@[\w-]+(?:\.[\w-]+)+", re.ASCII | re.I)


@dataclass(frozen=True)
class CleaningRules:
    # Dify's "remove_extra_spaces": runs of 3+ newlines -> 2, runs of horizontal whitespace -> one
    # space, no spaces at the end of a line.
    remove_extra_spaces: bool = True
    # Dify's "remove_urls_emails": delete URLs (http/https/ftp/www.) and e-mail addresses.
    remove_urls_emails: bool = False

    @classmethod
    def from_dify(cls, pre_processing_rules: list[dict[str, Any]] | None) -> CleaningRules:
        """Rules from Dify's `pre_processing_rules` ([{"id": ..., "enabled": ...}]): the defaults
        when there is no list, else each rule on only if listed as enabled; unknown ids (such as
        "remove_stopwords") are ignored."""
        if pre_processing_rules is None:
            return cls()
        enabled = {
            rule.get("id")
            for rule in pre_processing_rules
            if isinstance(rule, dict) and rule.get("enabled") is True
        }
        return cls(
            remove_extra_spaces="remove_extra_spaces" in enabled,
            remove_urls_emails="remove_urls_emails" in enabled,
        )


def clean(text: str, rules: CleaningRules) -> str:
    """The text with what breaks indexing removed and the enabled rules applied."""
    text = _NEWLINES.sub("\n", text)
    text = unicodedata.normalize("NFC", _UNWANTED.sub("", text))
    if rules.remove_urls_emails:
        text = _EMAIL.sub("", _URL.sub("", text))
    if rules.remove_extra_spaces:
        text = _TRAILING.sub("", _SPACES.sub(" ", text))
        text = _BLANK_LINES.sub("\n\n", text)
    return text
