"""Per-instruction tests of the IFEval checkers: pass, fail and boundary cases."""

import string

import pytest

from spar_jax.ifeval import INSTRUCTION_IDS, build_checker, check
from spar_jax.ifeval.checks_words import substitute_letter

LT, AL = "less than", "at least"

CASES = [
    # keywords:existence — case-insensitive, substring (no word boundary) quirk
    ("keywords:existence", {"keywords": ["cat", "dog"]}, "A Cat met a DOG.", True),
    ("keywords:existence", {"keywords": ["cat", "dog"]}, "A cat only.", False),
    ("keywords:existence", {"keywords": ["cat"]}, "concatenate", True),
    # keywords:frequency — at / below / above, both relations, substring quirk
    ("keywords:frequency", {"keyword": "apple", "frequency": 3, "relation": AL}, "apple Apple APPLE", True),
    ("keywords:frequency", {"keyword": "apple", "frequency": 3, "relation": AL}, "apple apple", False),
    ("keywords:frequency", {"keyword": "apple", "frequency": 3, "relation": AL}, "apple " * 4, True),
    ("keywords:frequency", {"keyword": "apple", "frequency": 3, "relation": LT}, "apple apple", True),
    ("keywords:frequency", {"keyword": "apple", "frequency": 3, "relation": LT}, "apple " * 3, False),
    ("keywords:frequency", {"keyword": "apple", "frequency": 3, "relation": LT}, "apple " * 4, False),
    ("keywords:frequency", {"keyword": " apple ", "frequency": 2, "relation": AL}, "pineapple, apple", True),
    # keywords:forbidden_words — whole words, case-insensitive
    ("keywords:forbidden_words", {"forbidden_words": ["dog"]}, "I like hot dogs.", True),
    ("keywords:forbidden_words", {"forbidden_words": ["dog"]}, "A Dog barked.", False),
    ("keywords:forbidden_words", {"forbidden_words": ["dog", "cat"]}, "No pets here.", True),
    # keywords:letter_frequency — lower-cased count
    ("keywords:letter_frequency", {"letter": "e", "let_frequency": 3, "let_relation": AL}, "eEe", True),
    ("keywords:letter_frequency", {"letter": "E", "let_frequency": 3, "let_relation": AL}, "ee", False),
    ("keywords:letter_frequency", {"letter": "e", "let_frequency": 3, "let_relation": LT}, "ee", True),
    ("keywords:letter_frequency", {"letter": "e", "let_frequency": 3, "let_relation": LT}, "eee", False),
    # language:response_language — undetectable text counts as followed
    ("language:response_language", {"language": "fr"}, "Le chat est sur la table et il dort tranquillement.", True),
    ("language:response_language", {"language": "fr"}, "The cat is on the table and it is sleeping quietly.", False),
    (
        "language:response_language",
        {"language": "es"},
        "Hola, ¿cómo estás? Espero que todo vaya bien en tu trabajo.",
        True,
    ),
    ("language:response_language", {"language": "de"}, "12345 !!! ...", True),
    # length_constraints:number_sentences — Punkt knows "Dr." is an abbreviation
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": AL}, "One. Two. Three.", True),
    ("length_constraints:number_sentences", {"num_sentences": 4, "relation": AL}, "One. Two. Three.", False),
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": LT}, "One. Two. Three.", False),
    ("length_constraints:number_sentences", {"num_sentences": 4, "relation": LT}, "One. Two. Three.", True),
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": LT}, "Dr. Smith came. He left.", True),
    # length_constraints:number_paragraphs — "***" dividers, blank middle paragraph fails
    ("length_constraints:number_paragraphs", {"num_paragraphs": 3}, "a\n***\nb\n***\nc", True),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "a\n***\nb\n***\nc", False),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 4}, "a\n***\nb\n***\nc", False),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "***\na\n***\nb\n***", True),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "a\n***\n***\nb", False),
    # length_constraints:number_words — \w+ runs
    ("length_constraints:number_words", {"num_words": 4, "relation": AL}, "one two three-four", True),
    ("length_constraints:number_words", {"num_words": 5, "relation": AL}, "one two three-four", False),
    ("length_constraints:number_words", {"num_words": 4, "relation": LT}, "one two three-four", False),
    ("length_constraints:number_words", {"num_words": 5, "relation": LT}, "one two three-four", True),
    # length_constraints:nth_paragraph_first_word
    (
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 3, "nth_paragraph": 2, "first_word": "weekend"},
        'Hello there.\n\n"Weekend, finally!" we said.\n\nBye.',
        True,
    ),
    (
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 3, "nth_paragraph": 2, "first_word": "Weekend"},
        "Hello there.\n\nweekend fun.\n\nBye.",
        True,
    ),
    (
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "weekend"},
        "Hello there.\n\nWeekend fun.\n\nBye.",
        False,
    ),
    (
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 3, "nth_paragraph": 2, "first_word": "weekend"},
        "Hello there.\n\nWeekends rock.\n\nBye.",
        False,
    ),
    # quirk: the count skips blank pieces, the nth piece is taken from the unfiltered split
    (
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "weekend"},
        "\n\nHello\n\nWeekend fun",
        False,
    ),
    # detectable_content:number_placeholders — at least n
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "[name] lives at [address]", True),
    ("detectable_content:number_placeholders", {"num_placeholders": 3}, "[name] lives at [address]", False),
    ("detectable_content:number_placeholders", {"num_placeholders": 3}, "[a][b][c][d]", True),
    # detectable_content:postscript
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Body.\n\nP.S. thanks", True),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Body.\n\np. s. lower case", True),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Body only.", False),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Body.\nP.P.S. more", True),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Body.\nP.S. only", False),
    ("detectable_content:postscript", {"postscript_marker": "PS:"}, "Body.\nps: hi", True),
    # detectable_format:number_bullet_lists — exactly n; "**" at line start is no bullet
    ("detectable_format:number_bullet_lists", {"num_bullets": 3}, "* a\n  * b\n- c", True),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* a\n  * b\n- c", False),
    ("detectable_format:number_bullet_lists", {"num_bullets": 4}, "* a\n  * b\n- c", False),
    ("detectable_format:number_bullet_lists", {"num_bullets": 1}, "**Bold title**\n* a", True),
    # detectable_format:constrained_response — case-sensitive, with the full stop
    ("detectable_format:constrained_response", {}, "  My answer is maybe.  ", True),
    ("detectable_format:constrained_response", {}, "my answer is yes.", False),
    ("detectable_format:constrained_response", {}, "My answer is yes", False),
    # detectable_format:number_highlighted_sections — at least n; **x** counts once
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*a* and *b*", True),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 3}, "*a* and *b*", False),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 1}, "**bold**", True),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "**bold**", False),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 1}, "* * and *\nx*", False),
    # detectable_format:multiple_sections — at least n, case-sensitive spliter
    (
        "detectable_format:multiple_sections",
        {"section_spliter": "SECTION", "num_sections": 2},
        "SECTION 1\nx\nSECTION 2\ny",
        True,
    ),
    (
        "detectable_format:multiple_sections",
        {"section_spliter": "SECTION", "num_sections": 3},
        "SECTION 1\nx\nSECTION 2\ny",
        False,
    ),
    (
        "detectable_format:multiple_sections",
        {"section_spliter": "SECTION", "num_sections": 2},
        "Section 1\nx\nSection 2\ny",
        False,
    ),
    (
        "detectable_format:multiple_sections",
        {"section_spliter": " Section ", "num_sections": 1},
        "Section X\nno digit",
        False,
    ),
    # detectable_format:json_format — bare JSON or inside a code fence
    ("detectable_format:json_format", {}, '  {"a": 1}\n', True),
    ("detectable_format:json_format", {}, '```json\n{"a": [1, 2]}\n```', True),
    ("detectable_format:json_format", {}, '```JSON\n{"a": 1}\n```', True),
    ("detectable_format:json_format", {}, "```\n[1, 2]\n```", True),
    ("detectable_format:json_format", {}, 'Here it is: {"a": 1}', False),
    ("detectable_format:json_format", {}, '{"a": 1,}', False),
    ("detectable_format:json_format", {}, '```python\n{"a": 1}\n```', False),
    # detectable_format:title
    ("detectable_format:title", {}, "<<Poem of Joy>>\nLa la.", True),
    ("detectable_format:title", {}, "<< >>\nNo title.", False),
    ("detectable_format:title", {}, "<<Not\ntitle>>", False),
    # combination:two_responses
    ("combination:two_responses", {}, "First.\n******\nSecond.", True),
    ("combination:two_responses", {}, "Same.\n******\nSame.\n", False),
    ("combination:two_responses", {}, "A\n******\nB\n******\nC", False),
    ("combination:two_responses", {}, "******\nA\n******\nB\n******", True),
    ("combination:two_responses", {}, "A\n******\n \n******\nB", False),
    # combination:repeat_prompt — case-insensitive prefix after strip
    ("combination:repeat_prompt", {"prompt_to_repeat": "Write a poem."}, "  write a POEM. Roses are red.", True),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Write a poem."}, "Sure! Write a poem.", False),
    # startend:end_checker — trailing whitespace and quotes ignored
    ("startend:end_checker", {"end_phrase": "Any other questions?"}, "Done. Any other questions?  \n\n", True),
    ("startend:end_checker", {"end_phrase": "Any other questions? "}, '"Done. any other questions?"', True),
    ("startend:end_checker", {"end_phrase": "Any other questions?"}, "Any other questions? Bye.", False),
    # change_case:capital_word_frequency — NLTK tokens that are all caps
    (
        "change_case:capital_word_frequency",
        {"capital_frequency": 3, "capital_relation": AL},
        "NASA and the USA use STATE-OF-THE-ART tools.",
        True,
    ),
    (
        "change_case:capital_word_frequency",
        {"capital_frequency": 4, "capital_relation": AL},
        "NASA and the USA use STATE-OF-THE-ART tools.",
        False,
    ),
    (
        "change_case:capital_word_frequency",
        {"capital_frequency": 3, "capital_relation": LT},
        "NASA and the USA use STATE-OF-THE-ART tools.",
        False,
    ),
    (
        "change_case:capital_word_frequency",
        {"capital_frequency": 4, "capital_relation": LT},
        "NASA and the USA use STATE-OF-THE-ART tools.",
        True,
    ),
    # change_case:english_capital / english_lowercase — case rule and English
    (
        "change_case:english_capital",
        {},
        "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG AND THEN RUNS BACK HOME TO SLEEP.",
        True,
    ),
    ("change_case:english_capital", {}, "The QUICK BROWN FOX JUMPS OVER THE LAZY DOG.", False),
    ("change_case:english_capital", {}, "ЭТО ПРЕДЛОЖЕНИЕ НАПИСАНО НА РУССКОМ ЯЗЫКЕ ДЛЯ ПРОВЕРКИ.", False),
    ("change_case:english_lowercase", {}, "this is an english sentence about the weather and the sea.", True),
    ("change_case:english_lowercase", {}, "This is an english sentence about the weather.", False),
    ("change_case:english_lowercase", {}, "der hund läuft schnell über die straße und bellt laut.", False),
    # punctuation:no_comma — only the ASCII comma
    ("punctuation:no_comma", {}, "No commas here.", True),
    ("punctuation:no_comma", {}, "Well, no.", False),
    ("punctuation:no_comma", {}, "全角逗号，不算", True),
    # startend:quotation
    ("startend:quotation", {}, ' "Hello there." \n', True),
    ("startend:quotation", {}, '"', False),
    ("startend:quotation", {}, '"Hello" world', False),
]


def test_cases_cover_all_25_types():
    assert len(INSTRUCTION_IDS) == 25
    assert {c[0] for c in CASES} == set(INSTRUCTION_IDS)


@pytest.mark.parametrize("instruction_id,kwargs,response,expected", CASES)
def test_checker(instruction_id, kwargs, response, expected):
    assert build_checker(instruction_id, kwargs)(response) is expected


def test_letter_frequency_substitutes_a_letter_for_non_letters():
    # Reference quirk: "#" is not a letter, so another (here: seeded) letter is counted.
    sub = substitute_letter("#")
    assert sub in string.ascii_lowercase and sub == substitute_letter("#")
    kw = {"letter": "#", "let_frequency": 4, "let_relation": AL}
    assert build_checker("keywords:letter_frequency", kw)(sub * 4) is True
    assert build_checker("keywords:letter_frequency", kw)("#" * 10) is False


def test_language_detection_is_deterministic_and_leaves_langdetect_global_alone():
    from langdetect import DetectorFactory

    before = DetectorFactory.seed
    text = "Short text. Maybe English, maybe not: ok si"
    results = {check(["language:response_language"], [{"language": "en"}], "", text)[0][0] for _ in range(5)}
    assert len(results) == 1
    assert DetectorFactory.seed == before


@pytest.mark.parametrize(
    "instruction_id,kwargs,needle",
    [
        ("no:such_thing", {}, "'no:such_thing'"),
        ("keywords:frequency", {"keyword": "a", "frequency": 2}, "'relation'"),
        ("keywords:frequency", {"keyword": "a", "frequency": 2, "relation": "more than"}, "'relation'"),
        ("keywords:frequency", {"keyword": "a", "frequency": "2", "relation": AL}, "'frequency'"),
        ("keywords:frequency", {"keyword": "a", "frequency": -1, "relation": AL}, "'frequency'"),
        ("keywords:frequency", {"keyword": "a", "frequency": True, "relation": AL}, "'frequency'"),
        ("keywords:existence", {"keywords": "cat"}, "'keywords'"),
        ("keywords:existence", {"keywords": ["("]}, "'keywords'"),
        ("punctuation:no_comma", {"num_words": 3}, "'num_words'"),
        ("language:response_language", {"language": "xx"}, "'language'"),
        (
            "length_constraints:nth_paragraph_first_word",
            {"num_paragraphs": 2, "nth_paragraph": 3, "first_word": "a"},
            "'nth_paragraph'",
        ),
        ("combination:repeat_prompt", {}, "'prompt_to_repeat'"),
    ],
)
def test_bad_instruction_or_kwargs_raise_value_error_naming_it(instruction_id, kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        build_checker(instruction_id, kwargs)


def test_none_kwargs_are_ignored_and_integral_floats_accepted():
    # The Hugging Face copy of IFEval stores every kwarg key, None where unused.
    kw = {"num_highlights": 2.0, "relation": None, "keywords": None}
    assert build_checker("detectable_format:number_highlighted_sections", kw)("*a* *b*") is True
    with pytest.raises(ValueError, match="'num_highlights'"):
        build_checker("detectable_format:number_highlighted_sections", {"num_highlights": 2.5})
